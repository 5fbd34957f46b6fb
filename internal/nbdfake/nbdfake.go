package nbdfake

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// Request is a transmission request as the server reads it.
type Request struct {
	Type   uint16 // 0 read, 7 block status
	Handle uint64
	Offset uint64
	Length uint32
}

// Server is a scripted NBD server: a handshake that grants structured
// replies, Contexts (base:allocation as ID 1 by default) and an export of
// Size bytes, then Answer for every request but NBD_CMD_DISC.
type Server struct {
	Size     uint64
	Multi    bool     // advertise NBD_FLAG_CAN_MULTI_CONN
	NoInfo   bool     // acknowledge NBD_OPT_GO without NBD_INFO_EXPORT, a lie
	Contexts []string // meta contexts granted, IDs from 1, whatever was asked
	Answer   func(c *Conn, r Request)
}

// Conn is one client's connection, for Answer to reply on.
type Conn struct {
	r *bufio.Reader
	w net.Conn
}

// Send writes parts to the client.
func (c *Conn) Send(parts ...[]byte) {
	for _, p := range parts {
		c.w.Write(p)
	}
}

// Close hangs up.
func (c *Conn) Close() { c.w.Close() }

// Start serves on a new Unix socket until the test ends and returns the
// URI of its export "disk".
func (f *Server) Start(t testing.TB) string {
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

// OptionReply is an option reply.
func OptionReply(opt, typ uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, 0x0003e889045565a9)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func (f *Server) serve(conn net.Conn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Minute))
	c := &Conn{r: bufio.NewReader(conn), w: conn}
	hello := binary.BigEndian.AppendUint64(nil, 0x4e42444d41474943)
	hello = binary.BigEndian.AppendUint64(hello, 0x49484156454f5054)
	c.Send(binary.BigEndian.AppendUint16(hello, 3))
	var b [16]byte
	if _, err := io.ReadFull(c.r, b[:4]); err != nil {
		return
	}
	contexts := f.Contexts
	if contexts == nil {
		contexts = []string{"base:allocation"}
	}
	for {
		if _, err := io.ReadFull(c.r, b[:16]); err != nil {
			return
		}
		opt := binary.BigEndian.Uint32(b[8:])
		io.CopyN(io.Discard, c.r, int64(binary.BigEndian.Uint32(b[12:])))
		switch opt {
		case 8: // structured replies
			c.Send(OptionReply(opt, 1, nil))
		case 10: // set meta context
			for i, name := range contexts {
				c.Send(OptionReply(opt, 4, append(binary.BigEndian.AppendUint32(nil, uint32(i+1)), name...)))
			}
			c.Send(OptionReply(opt, 1, nil))
		case 7: // go
			if !f.NoInfo {
				info := binary.BigEndian.AppendUint16(nil, 0)
				info = binary.BigEndian.AppendUint64(info, f.Size)
				flags := uint16(3)
				if f.Multi {
					flags |= 1 << 8
				}
				c.Send(OptionReply(opt, 3, binary.BigEndian.AppendUint16(info, flags)))
			}
			c.Send(OptionReply(opt, 1, nil))
			if !f.NoInfo {
				f.transmit(c)
			}
			return
		default:
			c.Send(OptionReply(opt, 1<<31+1, nil))
		}
	}
}

func (f *Server) transmit(c *Conn) {
	var h [28]byte
	for {
		if _, err := io.ReadFull(c.r, h[:]); err != nil {
			return
		}
		r := Request{Type: binary.BigEndian.Uint16(h[6:]), Handle: binary.BigEndian.Uint64(h[8:]), Offset: binary.BigEndian.Uint64(h[16:]), Length: binary.BigEndian.Uint32(h[24:])}
		if r.Type == 2 {
			return
		}
		f.Answer(c, r)
	}
}

// Simple is a simple reply.
func Simple(handle uint64, errno uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, 0x67446698)
	b = binary.BigEndian.AppendUint32(b, errno)
	b = binary.BigEndian.AppendUint64(b, handle)
	return append(b, data...)
}

// Chunk is a structured reply chunk.
func Chunk(flags, typ uint16, handle uint64, payload []byte) []byte {
	return ChunkClaiming(flags, typ, handle, uint32(len(payload)), payload)
}

// ChunkClaiming is a chunk whose header claims length bytes of payload.
func ChunkClaiming(flags, typ uint16, handle uint64, length uint32, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, 0x668e33ef)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	b = binary.BigEndian.AppendUint32(b, length)
	return append(b, payload...)
}

// DataChunk is an NBD_REPLY_TYPE_OFFSET_DATA chunk.
func DataChunk(flags uint16, handle, offset uint64, data []byte) []byte {
	return Chunk(flags, 1, handle, append(binary.BigEndian.AppendUint64(nil, offset), data...))
}

// HoleChunk is an NBD_REPLY_TYPE_OFFSET_HOLE chunk.
func HoleChunk(flags uint16, handle, offset uint64, length uint32) []byte {
	return Chunk(flags, 2, handle, binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, offset), length))
}

// StatusChunk is a final NBD_REPLY_TYPE_BLOCK_STATUS chunk for context
// id: extents are length, flags pairs.
func StatusChunk(handle uint64, id uint32, extents ...uint32) []byte {
	p := binary.BigEndian.AppendUint32(nil, id)
	for _, e := range extents {
		p = binary.BigEndian.AppendUint32(p, e)
	}
	return Chunk(1, 5, handle, p)
}
