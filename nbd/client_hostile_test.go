package nbd_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/nbd"
)

// fakeRequest is a request as the fake server reads it.
type fakeRequest struct {
	typ    uint16
	handle uint64
	offset uint64
	length uint32
}

// fakeServer is a scripted NBD server: an honest handshake (structured
// replies, base:allocation as context 1, an export of size bytes) and
// then whatever answer does with the requests, lies included.
type fakeServer struct {
	size     uint64
	multi    bool
	noInfo   bool     // acknowledge NBD_OPT_GO without NBD_INFO_EXPORT
	contexts []string // meta contexts the handshake grants: default base:allocation
	answer   func(w *fakeConn, req fakeRequest)
}

type fakeConn struct {
	r *bufio.Reader
	w net.Conn
}

func (c *fakeConn) send(parts ...[]byte) {
	for _, p := range parts {
		c.w.Write(p)
	}
}

// start serves on a new Unix socket and returns its URI.
func (f *fakeServer) start(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "liar.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go f.serve(conn)
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return "nbd+unix:///disk?socket=" + sock
}

func optReply(opt, typ uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, 0x0003e889045565a9)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func (f *fakeServer) serve(conn net.Conn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Minute))
	c := &fakeConn{r: bufio.NewReader(conn), w: conn}
	hello := binary.BigEndian.AppendUint64(nil, 0x4e42444d41474943)
	hello = binary.BigEndian.AppendUint64(hello, 0x49484156454f5054)
	c.send(binary.BigEndian.AppendUint16(hello, 3))
	var b [16]byte
	if _, err := io.ReadFull(c.r, b[:4]); err != nil {
		return
	}
	contexts := f.contexts
	if contexts == nil {
		contexts = []string{nbd.BaseAllocation}
	}
	for {
		if _, err := io.ReadFull(c.r, b[:16]); err != nil {
			return
		}
		opt := binary.BigEndian.Uint32(b[8:])
		io.CopyN(io.Discard, c.r, int64(binary.BigEndian.Uint32(b[12:])))
		switch opt {
		case 8: // structured replies
			c.send(optReply(opt, 1, nil))
		case 10: // set meta context
			for i, name := range contexts {
				c.send(optReply(opt, 4, append(binary.BigEndian.AppendUint32(nil, uint32(i+1)), name...)))
			}
			c.send(optReply(opt, 1, nil))
		case 7: // go
			if !f.noInfo {
				info := binary.BigEndian.AppendUint16(nil, 0)
				info = binary.BigEndian.AppendUint64(info, f.size)
				flags := uint16(3)
				if f.multi {
					flags |= 1 << 8
				}
				c.send(optReply(opt, 3, binary.BigEndian.AppendUint16(info, flags)))
			}
			c.send(optReply(opt, 1, nil))
			if f.noInfo {
				return
			}
			f.transmit(c)
			return
		default:
			c.send(optReply(opt, 1<<31+1, nil))
		}
	}
}

func (f *fakeServer) transmit(c *fakeConn) {
	var h [28]byte
	for {
		if _, err := io.ReadFull(c.r, h[:]); err != nil {
			return
		}
		req := fakeRequest{typ: binary.BigEndian.Uint16(h[6:]), handle: binary.BigEndian.Uint64(h[8:]), offset: binary.BigEndian.Uint64(h[16:]), length: binary.BigEndian.Uint32(h[24:])}
		if req.typ == 2 {
			return
		}
		f.answer(c, req)
	}
}

func simple(handle uint64, errno uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, 0x67446698)
	b = binary.BigEndian.AppendUint32(b, errno)
	b = binary.BigEndian.AppendUint64(b, handle)
	return append(b, data...)
}

func chunk(flags, typ uint16, handle uint64, payload []byte) []byte {
	return chunkClaiming(flags, typ, handle, uint32(len(payload)), payload)
}

// chunkClaiming is a chunk whose header claims length bytes of payload.
func chunkClaiming(flags, typ uint16, handle uint64, length uint32, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, 0x668e33ef)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	b = binary.BigEndian.AppendUint32(b, length)
	return append(b, payload...)
}

func dataChunk(flags uint16, handle, offset uint64, data []byte) []byte {
	return chunk(flags, 1, handle, append(binary.BigEndian.AppendUint64(nil, offset), data...))
}

func statusChunk(handle uint64, id uint32, extents ...uint32) []byte {
	p := binary.BigEndian.AppendUint32(nil, id)
	for _, e := range extents {
		p = binary.BigEndian.AppendUint32(p, e)
	}
	return chunk(1, 5, handle, p)
}

// TestClientRefusesLyingServers: each lie ends the request with an error
// that names the server and says what was wrong; none panics, hangs, or
// returns data that the server did not send.
func TestClientRefusesLyingServers(t *testing.T) {
	const size = 1 << 20
	read := func(c *nbd.Client, ctx context.Context) error { return c.ReadAt(ctx, make([]byte, 8192), 4096) }
	status := func(c *nbd.Client, ctx context.Context) error {
		_, err := c.BlockStatus(ctx, nbd.BaseAllocation, 0, 65536)
		return err
	}
	for _, lie := range []struct {
		name   string
		do     func(*nbd.Client, context.Context) error
		answer func(c *fakeConn, r fakeRequest)
		want   string // in the error
		eof    bool   // a short read: io.ErrUnexpectedEOF, not ErrProtocol
	}{
		{"block status past the end", status, func(c *fakeConn, r fakeRequest) { c.send(statusChunk(r.handle, 1, 2*size, 0)) }, "past the end", false},
		{"block status extent of length 0", status, func(c *fakeConn, r fakeRequest) { c.send(statusChunk(r.handle, 1, 0, 0)) }, "length 0", false},
		{"block status extents past the request, not last", status, func(c *fakeConn, r fakeRequest) {
			c.send(statusChunk(r.handle, 1, 131072, 0, 4096, 3))
		}, "not the last", false},
		{"block status of a context not negotiated", status, func(c *fakeConn, r fakeRequest) { c.send(statusChunk(r.handle, 7, 65536, 0)) }, "not negotiated", false},
		{"block status twice for one context", status, func(c *fakeConn, r fakeRequest) {
			c.send(chunk(0, 5, r.handle, binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 1), 4096), 0)), statusChunk(r.handle, 1, 4096, 0))
		}, "twice", false},
		{"block status with no extents", status, func(c *fakeConn, r fakeRequest) { c.send(chunk(1, 0, r.handle, nil)) }, "no extents", false},
		{"block status as a simple reply", status, func(c *fakeConn, r fakeRequest) { c.send(simple(r.handle, 0, nil)) }, "simple reply", false},
		{"reply to an unknown handle", read, func(c *fakeConn, r fakeRequest) { c.send(simple(r.handle+1000, 0, make([]byte, r.length))) }, "not in flight", false},
		{"chunk for an unknown handle", read, func(c *fakeConn, r fakeRequest) {
			c.send(dataChunk(1, r.handle^0xff, r.offset, make([]byte, r.length)))
		}, "not in flight", false},
		{"short simple read", read, func(c *fakeConn, r fakeRequest) { c.send(simple(r.handle, 0, make([]byte, r.length/2))); c.w.Close() }, "short read", true},
		{"short data chunk", read, func(c *fakeConn, r fakeRequest) {
			c.send(chunkClaiming(1, 1, r.handle, r.length+8, append(binary.BigEndian.AppendUint64(nil, r.offset), make([]byte, 100)...)))
			c.w.Close()
		}, "short read", true},
		{"a read answered in part", read, func(c *fakeConn, r fakeRequest) { c.send(dataChunk(1, r.handle, r.offset, make([]byte, r.length/2))) }, "answered with 4096 bytes", false},
		{"data outside the request", read, func(c *fakeConn, r fakeRequest) {
			c.send(dataChunk(1, r.handle, r.offset+4096, make([]byte, r.length)))
		}, "outside the read", false},
		{"data before the request", read, func(c *fakeConn, r fakeRequest) { c.send(dataChunk(1, r.handle, r.offset-1, make([]byte, 10))) }, "outside the read", false},
		{"overlapping chunks", read, func(c *fakeConn, r fakeRequest) {
			c.send(dataChunk(0, r.handle, r.offset, make([]byte, 4096)), dataChunk(1, r.handle, r.offset+4095, make([]byte, 4097)))
		}, "overlaps", false},
		{"a hole overlapping data", read, func(c *fakeConn, r fakeRequest) {
			c.send(dataChunk(0, r.handle, r.offset, make([]byte, r.length)))
			c.send(chunk(1, 2, r.handle, binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, r.offset), 512)))
		}, "overlaps", false},
		{"block status chunk to a read", read, func(c *fakeConn, r fakeRequest) { c.send(statusChunk(r.handle, 1, r.length, 0)) }, "chunk type 5 in reply to read", false},
		{"a chunk of 2 GiB", read, func(c *fakeConn, r fakeRequest) { c.send(chunkClaiming(1, 0x8001, r.handle, 1<<31, nil)) }, "of 2147483648 bytes", false},
		{"a data chunk of 4 GiB", read, func(c *fakeConn, r fakeRequest) {
			c.send(chunkClaiming(1, 1, r.handle, 1<<32-1, binary.BigEndian.AppendUint64(nil, r.offset)))
		}, "outside the read", false},
		{"endless chunks", read, func(c *fakeConn, r fakeRequest) {
			for range 1000 {
				c.send(chunk(0, 0x8001, r.handle, append(binary.BigEndian.AppendUint32(nil, 5), 0, 0)))
			}
		}, "more than", false},
		{"an error chunk with errno 0", read, func(c *fakeConn, r fakeRequest) { c.send(chunk(1, 0x8001, r.handle, []byte{0, 0, 0, 0, 0, 0})) }, "errno 0", false},
		{"bad reply magic", read, func(c *fakeConn, r fakeRequest) { c.send(make([]byte, 16)) }, "reply magic", false},
		{"NONE without DONE", read, func(c *fakeConn, r fakeRequest) { c.send(chunk(0, 0, r.handle, nil)) }, "NBD_REPLY_TYPE_NONE", false},
	} {
		t.Run(lie.name, func(t *testing.T) {
			f := &fakeServer{size: size, answer: lie.answer}
			uri := f.start(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, err := nbd.Dial(ctx, uri, nbd.ClientOptions{MetaContexts: []string{nbd.BaseAllocation}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			err = lie.do(c, ctx)
			switch {
			case err == nil:
				t.Fatal("the client believed the lie")
			case !strings.Contains(err.Error(), uri):
				t.Errorf("error %q does not name the server %s", err, uri)
			case !strings.Contains(err.Error(), lie.want):
				t.Errorf("error %q does not say %q", err, lie.want)
			case lie.eof && !errors.Is(err, io.ErrUnexpectedEOF):
				t.Errorf("error %q is not io.ErrUnexpectedEOF", err)
			case !lie.eof && !errors.Is(err, nbd.ErrProtocol):
				t.Errorf("error %q is not ErrProtocol", err)
			}
			// The connection is closed: later requests fail at once.
			if err := read(c, ctx); err == nil {
				t.Error("a read after the lie succeeded")
			}
		})
	}
}

// TestClientRefusesLyingHandshakes: lies in the handshake fail Dial with
// an error that names the server.
func TestClientRefusesLyingHandshakes(t *testing.T) {
	for _, f := range []*fakeServer{
		{size: 4096, noInfo: true},
		{size: 4096, contexts: []string{"qemu:dirty-bitmap:evil"}},
		{size: 4096, contexts: []string{nbd.BaseAllocation, nbd.BaseAllocation}},
		{size: 1 << 63},
	} {
		uri := f.start(t)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		c, err := nbd.Dial(ctx, uri, nbd.ClientOptions{MetaContexts: []string{nbd.BaseAllocation}})
		cancel()
		if err == nil {
			c.Close()
			t.Errorf("Dial believed %+v", f)
		} else if !errors.Is(err, nbd.ErrProtocol) || !strings.Contains(err.Error(), uri) {
			t.Errorf("Dial of %+v: %v, want ErrProtocol naming the server", f, err)
		}
	}
}

// TestClientRequestsInFlight: a server that answers nothing until it has
// 8 requests, and then answers them in reverse order, with chunks out of
// order, serves a client that sends them at once and matches replies by
// handle. Block status that the server gives in small steps is asked for
// again until it covers the range.
func TestClientRequestsInFlight(t *testing.T) {
	disk := testDisk(1 << 20)
	var held []fakeRequest
	f := &fakeServer{size: uint64(len(disk)), answer: func(c *fakeConn, r fakeRequest) {
		if r.typ == 7 { // 4 KiB at a time, alternating
			c.send(statusChunk(r.handle, 1, 4096, uint32(r.offset/4096%2)))
			return
		}
		held = append(held, r)
		if len(held) < 8 {
			return
		}
		for i := len(held) - 1; i >= 0; i-- {
			r := held[i]
			half := uint64(r.length / 2)
			c.send(dataChunk(0, r.handle, r.offset+half, disk[r.offset+half:r.offset+uint64(r.length)]),
				chunk(0, 2, r.handle, binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, r.offset), 512)),
				dataChunk(0, r.handle, r.offset+512, disk[r.offset+512:r.offset+half]),
				chunk(1, 0, r.handle, nil))
		}
		held = nil
	}}
	copy(disk[:512], make([]byte, 512)) // what the hole chunk says
	uri := f.start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := nbd.Dial(ctx, uri, nbd.ClientOptions{MetaContexts: []string{nbd.BaseAllocation}, MaxRequest: 128 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make([]byte, len(disk))
	if err := c.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(disk); i += 128 << 10 {
		copy(disk[i:i+512], make([]byte, 512))
	}
	if !bytes.Equal(got, disk) {
		t.Fatal("read differs")
	}
	extents, err := c.BlockStatus(ctx, nbd.BaseAllocation, 0, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if len(extents) != 16 || extents[15] != (nbd.Extent{Offset: 15 * 4096, Length: 4096, Flags: 1}) {
		t.Errorf("extents %v", extents)
	}
}

// TestClientCancel: a request the server never answers ends when its
// context does, and Close still returns.
func TestClientCancel(t *testing.T) {
	f := &fakeServer{size: 1 << 20, answer: func(*fakeConn, fakeRequest) {}}
	uri := f.start(t)
	c, err := nbd.Dial(context.Background(), uri, nbd.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.ReadAt(ctx, make([]byte, 4096), 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("read never answered: %v, want the context's error", err)
	}
	c.Close()
}
