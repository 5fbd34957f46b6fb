package nbd_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/nbd"
)

// client is a minimal NBD client for tests: enough to negotiate and read,
// and to send whatever a hostile client might.
type client struct {
	t    *testing.T
	conn net.Conn
}

func serve(t *testing.T, exports ...*nbd.Export) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]*nbd.Export{}
	for _, e := range exports {
		m[e.Name] = e
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&nbd.Server{Exports: m, MaxRead: 1 << 20}).Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return l.Addr().String()
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second)) // turns a hang into a failure
	t.Cleanup(func() { conn.Close() })
	c := &client{t: t, conn: conn}
	var hello [18]byte
	c.read(hello[:])
	if binary.BigEndian.Uint64(hello[:]) != 0x4e42444d41474943 || binary.BigEndian.Uint64(hello[8:]) != 0x49484156454f5054 {
		t.Fatalf("bad server greeting %x", hello)
	}
	c.write(binary.BigEndian.AppendUint32(nil, 3)) // fixed newstyle, no zeroes
	return c
}

func (c *client) read(p []byte) {
	c.t.Helper()
	if _, err := io.ReadFull(c.conn, p); err != nil {
		c.t.Fatalf("read: %v", err)
	}
}

func (c *client) write(p []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(p); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *client) option(opt uint32, data []byte) {
	b := binary.BigEndian.AppendUint64(nil, 0x49484156454f5054)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	c.write(append(b, data...))
}

// optionReply reads one option reply: its type and data.
func (c *client) optionReply() (uint32, []byte) {
	var head [20]byte
	c.read(head[:])
	if binary.BigEndian.Uint64(head[:]) != 0x0003e889045565a9 {
		c.t.Fatalf("bad option reply magic %x", head[:8])
	}
	data := make([]byte, binary.BigEndian.Uint32(head[16:]))
	c.read(data)
	return binary.BigEndian.Uint32(head[12:]), data
}

func goRequest(name string, infos ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

// goExport negotiates export name with NBD_OPT_GO and returns its size.
func (c *client) goExport(name string) uint64 {
	c.t.Helper()
	c.option(7, goRequest(name, 3))
	var size uint64
	for {
		typ, data := c.optionReply()
		switch typ {
		case 3: // info
			if binary.BigEndian.Uint16(data) == 0 {
				size = binary.BigEndian.Uint64(data[2:])
				if flags := binary.BigEndian.Uint16(data[10:]); flags&2 == 0 {
					c.t.Errorf("export not flagged read-only: %#x", flags)
				}
			}
		case 1: // ack
			return size
		default:
			c.t.Fatalf("NBD_OPT_GO %q: reply %#x %q", name, typ, data)
		}
	}
}

func (c *client) request(typ uint16, handle, offset uint64, length uint32, payload []byte) {
	b := binary.BigEndian.AppendUint32(nil, 0x25609513)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	b = binary.BigEndian.AppendUint64(b, offset)
	b = binary.BigEndian.AppendUint32(b, length)
	c.write(append(b, payload...))
}

// reply reads a simple reply's error and, if it is 0, n bytes of data.
func (c *client) reply(handle uint64, n int) (uint32, []byte) {
	c.t.Helper()
	var head [16]byte
	c.read(head[:])
	if binary.BigEndian.Uint32(head[:]) != 0x67446698 || binary.BigEndian.Uint64(head[8:]) != handle {
		c.t.Fatalf("bad reply header %x for handle %d", head, handle)
	}
	errno := binary.BigEndian.Uint32(head[4:])
	if errno != 0 {
		return errno, nil
	}
	data := make([]byte, n)
	c.read(data)
	return 0, data
}

func testDisk(size int) []byte {
	b := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 1))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func TestNegotiateAndRead(t *testing.T) {
	disk := testDisk(3<<20 + 77)
	addr := serve(t, &nbd.Export{Name: "os", Size: int64(len(disk)), Disk: bytes.NewReader(disk)},
		&nbd.Export{Name: "data", Size: 10, Disk: bytes.NewReader(make([]byte, 10))})
	c := dial(t, addr)

	c.option(3, nil) // NBD_OPT_LIST
	var names []string
	for {
		typ, data := c.optionReply()
		if typ == 1 {
			break
		}
		names = append(names, string(data[4:]))
	}
	if len(names) != 2 || names[0] != "data" || names[1] != "os" {
		t.Errorf("NBD_OPT_LIST: %q", names)
	}
	c.option(6, goRequest("nope")) // NBD_OPT_INFO of an unknown export
	if typ, _ := c.optionReply(); typ != 1<<31+6 {
		t.Errorf("info on an unknown export: reply %#x, want NBD_REP_ERR_UNKNOWN", typ)
	}
	c.option(99, nil) // an option nobody defined
	if typ, _ := c.optionReply(); typ != 1<<31+1 {
		t.Errorf("option 99: reply %#x, want NBD_REP_ERR_UNSUP", typ)
	}
	if size := c.goExport("os"); size != uint64(len(disk)) {
		t.Fatalf("size %d, want %d", size, len(disk))
	}
	for i, r := range []struct {
		off uint64
		n   uint32
	}{{0, 4096}, {12345, 100000}, {uint64(len(disk)) - 77, 77}, {1 << 20, 1 << 20}} {
		c.request(0, uint64(i), r.off, r.n, nil)
		errno, data := c.reply(uint64(i), int(r.n))
		if errno != 0 || !bytes.Equal(data, disk[r.off:r.off+uint64(r.n)]) {
			t.Errorf("read %d bytes at %d: errno %d", r.n, r.off, errno)
		}
	}
	c.request(2, 99, 0, 0, nil) // NBD_CMD_DISC
	if _, err := c.conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("after NBD_CMD_DISC: %v, want the connection closed", err)
	}
}

func TestHostileRequests(t *testing.T) {
	disk := testDisk(1 << 20)
	addr := serve(t, &nbd.Export{Name: "d", Size: int64(len(disk)), Disk: bytes.NewReader(disk)})

	c := dial(t, addr)
	c.goExport("")                     // the only export answers to the empty name
	c.request(0, 1, 1<<20-10, 20, nil) // past the end
	if errno, _ := c.reply(1, 0); errno != 22 {
		t.Errorf("read past the end: errno %d, want EINVAL", errno)
	}
	c.request(0, 2, 1<<63, 1, nil) // offset beyond any disk
	if errno, _ := c.reply(2, 0); errno != 22 {
		t.Errorf("huge offset: errno %d, want EINVAL", errno)
	}
	c.request(0, 3, 0, 1<<31, nil) // huge length
	if errno, _ := c.reply(3, 0); errno != 22 {
		t.Errorf("huge read: errno %d, want EINVAL", errno)
	}
	c.request(1, 4, 0, 4, []byte("evil")) // a write
	if errno, _ := c.reply(4, 0); errno != 1 {
		t.Errorf("write: errno %d, want EPERM", errno)
	}
	c.request(4, 5, 0, 4096, nil) // trim
	if errno, _ := c.reply(5, 0); errno != 1 {
		t.Errorf("trim: errno %d, want EPERM", errno)
	}
	c.request(77, 6, 0, 0, nil) // unknown command
	if errno, _ := c.reply(6, 0); errno != 22 {
		t.Errorf("unknown command: errno %d, want EINVAL", errno)
	}
	c.request(0, 7, 0, 16, nil) // still serving after all that
	if errno, data := c.reply(7, 16); errno != 0 || !bytes.Equal(data, disk[:16]) {
		t.Errorf("read after hostile requests: errno %d", errno)
	}
	c.write([]byte("not a request at all, just bytes")) // bad magic: hang up
	if _, err := io.ReadAll(c.conn); err != nil {
		t.Errorf("after a bad magic: %v, want the connection closed", err)
	}

	for _, hostile := range []struct {
		name string
		send func(c *client)
	}{
		{"huge option", func(c *client) {
			c.write(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, 0x49484156454f5054), 7), 1<<31))
		}},
		{"bad option magic", func(c *client) { c.write(make([]byte, 16)) }},
		{"write of a gigabyte", func(c *client) { c.goExport("d"); c.request(1, 1, 0, 1<<30, nil) }},
		{"short go request", func(c *client) { c.option(7, []byte{0, 0, 1, 0}); c.optionReply(); c.conn.Close() }},
		{"name longer than its option", func(c *client) {
			c.option(7, []byte{0xff, 0xff, 0xff, 0xff, 0, 0})
			if typ, _ := c.optionReply(); typ != 1<<31+3 {
				t.Errorf("malformed go: reply %#x, want NBD_REP_ERR_INVALID", typ)
			}
			c.conn.Close()
		}},
	} {
		c := dial(t, addr)
		hostile.send(c)
		io.ReadAll(c.conn) // the server hangs up (or we did); it must not crash
	}
	// The server still serves new clients.
	c = dial(t, addr)
	c.goExport("d")
	c.request(0, 1, 100, 10, nil)
	if errno, data := c.reply(1, 10); errno != 0 || !bytes.Equal(data, disk[100:110]) {
		t.Fatalf("server broken after hostile clients: errno %d", errno)
	}
}

func TestOptAbortAndExportName(t *testing.T) {
	disk := testDisk(8192)
	addr := serve(t, &nbd.Export{Name: "d", Size: int64(len(disk)), Disk: bytes.NewReader(disk)})
	c := dial(t, addr)
	c.option(2, nil) // NBD_OPT_ABORT
	if typ, _ := c.optionReply(); typ != 1 {
		t.Errorf("abort: reply %#x, want ACK", typ)
	}
	// The old-style NBD_OPT_EXPORT_NAME still works.
	c = dial(t, addr)
	c.option(1, []byte("d"))
	var reply [10]byte
	c.read(reply[:])
	if binary.BigEndian.Uint64(reply[:]) != uint64(len(disk)) {
		t.Errorf("export name reply: %x", reply)
	}
	c.request(0, 1, 0, 8192, nil)
	if errno, data := c.reply(1, 8192); errno != 0 || !bytes.Equal(data, disk) {
		t.Errorf("read after NBD_OPT_EXPORT_NAME: errno %d", errno)
	}
}
