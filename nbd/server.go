package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"sync"
)

// Export is one disk the server offers.
type Export struct {
	Name        string
	Description string
	Size        int64
	Disk        io.ReaderAt
}

// Server serves Exports read-only. Its zero value needs Exports set.
type Server struct {
	// Exports by name. A client asking for the empty name gets the only
	// export when there is exactly one.
	Exports map[string]*Export
	// MaxRead bounds one read request; larger ones get EINVAL. 0 means 32 MiB.
	MaxRead uint32
	// Log, if set, records connections and protocol errors.
	Log *slog.Logger
}

// Serve accepts connections on l until ctx is done or l fails, serving
// each in its own goroutine, and waits for them to end before returning.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	for {
		conn, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("nbd: accept: %w", err)
		}
		wg.Go(func() { s.ServeConn(ctx, conn) })
	}
}

// ServeConn serves one client until it disconnects, breaks the protocol,
// or ctx is done; then it closes conn.
func (s *Server) ServeConn(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	err := s.serve(ctx, conn)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && s.Log != nil {
		s.Log.Info("nbd client disconnected", "remote", conn.RemoteAddr().String(), "reason", err)
	}
}

// session is one client's connection.
type session struct {
	srv      *Server
	r        *bufio.Reader
	w        *bufio.Writer
	noZeroes bool
}

// serve runs the handshake and then the transmission phase.
func (s *Server) serve(ctx context.Context, rw io.ReadWriter) error {
	c := &session{srv: s, r: bufio.NewReader(rw), w: bufio.NewWriterSize(rw, 128<<10)}
	export, err := c.handshake()
	if err != nil || export == nil {
		return err
	}
	return c.transmit(export)
}

func (c *session) handshake() (*Export, error) {
	var hello [18]byte
	binary.BigEndian.PutUint64(hello[0:], magicNBD)
	binary.BigEndian.PutUint64(hello[8:], magicIHaveOpt)
	binary.BigEndian.PutUint16(hello[16:], flagFixedNewstyle|flagNoZeroes)
	if err := c.send(hello[:]); err != nil {
		return nil, err
	}
	var flags [4]byte
	if _, err := io.ReadFull(c.r, flags[:]); err != nil {
		return nil, err
	}
	clientFlags := binary.BigEndian.Uint32(flags[:])
	if clientFlags&clientFixed == 0 {
		return nil, errors.New("client does not speak fixed newstyle")
	}
	if clientFlags&^(clientFixed|clientNoZeroes) != 0 {
		return nil, fmt.Errorf("unknown client flags %#x", clientFlags)
	}
	c.noZeroes = clientFlags&clientNoZeroes != 0
	for {
		var head [16]byte
		if _, err := io.ReadFull(c.r, head[:]); err != nil {
			return nil, err
		}
		if binary.BigEndian.Uint64(head[0:]) != magicIHaveOpt {
			return nil, errors.New("bad option magic")
		}
		opt, length := binary.BigEndian.Uint32(head[8:]), binary.BigEndian.Uint32(head[12:])
		if length > maxOptionLength {
			return nil, fmt.Errorf("option %d of %d bytes is too long", opt, length)
		}
		data := make([]byte, length)
		if _, err := io.ReadFull(c.r, data); err != nil {
			return nil, err
		}
		export, done, err := c.option(opt, data)
		if err != nil || done {
			return export, err
		}
	}
}

// option answers one option; done means the handshake is over (export nil:
// the client aborted).
func (c *session) option(opt uint32, data []byte) (*Export, bool, error) {
	switch opt {
	case optAbort:
		c.reply(opt, repAck, nil)
		return nil, true, nil
	case optList:
		if len(data) != 0 {
			return nil, false, c.reply(opt, repErrInval, []byte("NBD_OPT_LIST takes no data"))
		}
		names := make([]string, 0, len(c.srv.Exports))
		for name := range c.srv.Exports {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			body := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
			if err := c.reply(opt, repServer, append(body, name...)); err != nil {
				return nil, false, err
			}
		}
		return nil, false, c.reply(opt, repAck, nil)
	case optExportName:
		e := c.srv.lookup(string(data))
		if e == nil {
			return nil, true, fmt.Errorf("unknown export %q", data)
		}
		out := binary.BigEndian.AppendUint64(nil, uint64(e.Size))
		out = binary.BigEndian.AppendUint16(out, transmissionFlags)
		if !c.noZeroes {
			out = append(out, make([]byte, 124)...)
		}
		return e, true, c.send(out)
	case optInfo, optGo:
		name, requests, ok := parseInfoRequest(data)
		if !ok {
			return nil, false, c.reply(opt, repErrInval, []byte("malformed NBD_OPT_INFO/GO request"))
		}
		e := c.srv.lookup(name)
		if e == nil {
			return nil, false, c.reply(opt, repErrUnkn, []byte("no such export"))
		}
		if err := c.sendInfo(opt, e, requests); err != nil {
			return nil, false, err
		}
		if err := c.reply(opt, repAck, nil); err != nil {
			return nil, false, err
		}
		if opt == optGo {
			return e, true, nil
		}
		return nil, false, nil
	default:
		return nil, false, c.reply(opt, repErrUnsup, nil)
	}
}

const transmissionFlags = transHasFlags | transReadOnly | transCanMultiConn

// parseInfoRequest reads NBD_OPT_INFO/GO data: the export name and the
// information types asked for.
func parseInfoRequest(data []byte) (string, []uint16, bool) {
	if len(data) < 4 {
		return "", nil, false
	}
	n := binary.BigEndian.Uint32(data)
	if uint64(n)+6 > uint64(len(data)) {
		return "", nil, false
	}
	name := string(data[4 : 4+n])
	rest := data[4+n:]
	count := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*count {
		return "", nil, false
	}
	requests := make([]uint16, count)
	for i := range requests {
		requests[i] = binary.BigEndian.Uint16(rest[2*i:])
	}
	return name, requests, true
}

func (c *session) sendInfo(opt uint32, e *Export, requests []uint16) error {
	info := binary.BigEndian.AppendUint16(nil, infoExport)
	info = binary.BigEndian.AppendUint64(info, uint64(e.Size))
	info = binary.BigEndian.AppendUint16(info, transmissionFlags)
	if err := c.reply(opt, repInfo, info); err != nil {
		return err
	}
	for _, r := range requests {
		var body []byte
		switch r {
		case infoName:
			body = append(binary.BigEndian.AppendUint16(nil, infoName), e.Name...)
		case infoDescription:
			body = append(binary.BigEndian.AppendUint16(nil, infoDescription), e.Description...)
		case infoBlockSize:
			body = binary.BigEndian.AppendUint16(nil, infoBlockSize)
			body = binary.BigEndian.AppendUint32(body, 1)
			body = binary.BigEndian.AppendUint32(body, 4096)
			body = binary.BigEndian.AppendUint32(body, c.srv.maxRead())
		default:
			continue // types we do not know are ignored, as the protocol says
		}
		if err := c.reply(opt, repInfo, body); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) lookup(name string) *Export {
	if e, ok := s.Exports[name]; ok {
		return e
	}
	if name == "" && len(s.Exports) == 1 {
		for _, e := range s.Exports {
			return e
		}
	}
	return nil
}

func (s *Server) maxRead() uint32 {
	if s.MaxRead == 0 {
		return 32 << 20
	}
	return s.MaxRead
}

func (c *session) reply(opt, typ uint32, data []byte) error {
	out := binary.BigEndian.AppendUint64(nil, magicOptionReply)
	out = binary.BigEndian.AppendUint32(out, opt)
	out = binary.BigEndian.AppendUint32(out, typ)
	out = binary.BigEndian.AppendUint32(out, uint32(len(data)))
	return c.send(append(out, data...))
}

func (c *session) send(b []byte) error {
	if _, err := c.w.Write(b); err != nil {
		return err
	}
	return c.w.Flush()
}

// transmit serves requests, in order, until the client disconnects.
func (c *session) transmit(e *Export) error {
	var head [requestHeaderSize]byte
	var buf []byte
	for {
		if _, err := io.ReadFull(c.r, head[:]); err != nil {
			return err
		}
		if binary.BigEndian.Uint32(head[0:]) != magicRequest {
			return errors.New("bad request magic")
		}
		typ := binary.BigEndian.Uint16(head[6:])
		handle := head[8:16]
		offset := binary.BigEndian.Uint64(head[16:])
		length := binary.BigEndian.Uint32(head[24:])
		switch typ {
		case cmdDisc:
			return nil
		case cmdRead:
			if length > c.srv.maxRead() || offset > uint64(e.Size) || uint64(length) > uint64(e.Size)-offset {
				if err := c.simpleReply(handle, errInval, nil); err != nil {
					return err
				}
				continue
			}
			if cap(buf) < int(length) {
				buf = make([]byte, length)
			}
			data := buf[:length]
			// io.ReaderAt may say EOF with a full read at the very end.
			if n, err := e.Disk.ReadAt(data, int64(offset)); n < len(data) || err != nil && !errors.Is(err, io.EOF) {
				if c.srv.Log != nil {
					c.srv.Log.Error("nbd read failed", "export", e.Name, "offset", offset, "length", length, "error", err)
				}
				if err := c.simpleReply(handle, errIO, nil); err != nil {
					return err
				}
				continue
			}
			if err := c.simpleReply(handle, 0, data); err != nil {
				return err
			}
		case cmdWrite:
			// The payload follows; swallow it, or hang up if it is absurd.
			if length > c.srv.maxRead() {
				return fmt.Errorf("write of %d bytes", length)
			}
			if _, err := io.CopyN(io.Discard, c.r, int64(length)); err != nil {
				return err
			}
			if err := c.simpleReply(handle, errPerm, nil); err != nil {
				return err
			}
		default:
			errno := uint32(errInval)
			if typ == 4 || typ == 6 { // trim, write zeroes: a read-only export refuses them
				errno = errPerm
			}
			if err := c.simpleReply(handle, errno, nil); err != nil {
				return err
			}
		}
	}
}

func (c *session) simpleReply(handle []byte, errno uint32, data []byte) error {
	var head [16]byte
	binary.BigEndian.PutUint32(head[0:], magicSimpleReply)
	binary.BigEndian.PutUint32(head[4:], errno)
	copy(head[8:], handle)
	if _, err := c.w.Write(head[:]); err != nil {
		return err
	}
	if _, err := c.w.Write(data); err != nil {
		return err
	}
	return c.w.Flush()
}
