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
	// Disk is read for NBD_CMD_READ. If it is also an ExtentReader, block
	// status (base:allocation) shows its holes; otherwise all is data.
	Disk io.ReaderAt
}

// ExtentReader is implemented by a Disk that knows which of its ranges
// read as zeroes without reading them, such as a restore point's
// snapshot.DiskReader.
type ExtentReader interface {
	// Extent returns the length of the run at off (off < size) that is
	// all zero or all data, and which; at least 1 byte.
	Extent(ctx context.Context, off int64) (length int64, zero bool, err error)
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
	ctx        context.Context
	srv        *Server
	r          *bufio.Reader
	w          *bufio.Writer
	noZeroes   bool
	structured bool // structured replies negotiated
	// The meta contexts selected (NBD_OPT_SET_META_CONTEXT), for metaExport.
	metaExport     string
	baseAllocation bool
}

// baseAllocationID is the ID the server gives base:allocation, its only
// meta context.
const baseAllocationID = 1

// serve runs the handshake and then the transmission phase.
func (s *Server) serve(ctx context.Context, rw io.ReadWriter) error {
	c := &session{ctx: ctx, srv: s, r: bufio.NewReader(rw), w: bufio.NewWriterSize(rw, 128<<10)}
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
			if name != c.metaExport {
				c.baseAllocation = false // contexts were selected for another export
			}
			return e, true, nil
		}
		return nil, false, nil
	case optStructuredReply:
		if len(data) != 0 {
			return nil, false, c.reply(opt, repErrInval, []byte("NBD_OPT_STRUCTURED_REPLY takes no data"))
		}
		c.structured = true
		return nil, false, c.reply(opt, repAck, nil)
	case optListMetaContext, optSetMetaContext:
		return nil, false, c.metaContext(opt, data)
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
	return c.send(appendOptionReply(nil, opt, typ, data))
}

// metaContext answers NBD_OPT_LIST_META_CONTEXT and _SET_META_CONTEXT.
// The server knows one context, base:allocation.
func (c *session) metaContext(opt uint32, data []byte) error {
	if !c.structured {
		return c.reply(opt, repErrInval, []byte("meta contexts need structured replies first"))
	}
	export, queries, ok := parseMetaContextRequest(data)
	if !ok {
		return c.reply(opt, repErrInval, []byte("malformed meta context request"))
	}
	if c.srv.lookup(export) == nil {
		return c.reply(opt, repErrUnkn, []byte("no such export"))
	}
	selected := false
	for _, q := range queries {
		selected = selected || q == BaseAllocation || opt == optListMetaContext && q == "base:"
	}
	if opt == optListMetaContext && len(queries) == 0 {
		selected = true // no query lists them all
	}
	if opt == optSetMetaContext {
		c.metaExport, c.baseAllocation = export, selected
	}
	if selected {
		body := binary.BigEndian.AppendUint32(nil, baseAllocationID)
		if err := c.reply(opt, repMetaContext, append(body, BaseAllocation...)); err != nil {
			return err
		}
	}
	return c.reply(opt, repAck, nil)
}

// parseMetaContextRequest reads NBD_OPT_*_META_CONTEXT data: the export's
// name and the queries.
func parseMetaContextRequest(data []byte) (string, []string, bool) {
	field := func() (string, bool) {
		if len(data) < 4 {
			return "", false
		}
		n := binary.BigEndian.Uint32(data)
		if uint64(n) > uint64(len(data)-4) {
			return "", false
		}
		s := string(data[4 : 4+n])
		data = data[4+n:]
		return s, true
	}
	export, ok := field()
	if !ok || len(data) < 4 {
		return "", nil, false
	}
	count := binary.BigEndian.Uint32(data)
	data = data[4:]
	if uint64(count)*4 > uint64(len(data)) { // each query takes 4 bytes at least
		return "", nil, false
	}
	queries := make([]string, 0, count)
	for range count {
		q, ok := field()
		if !ok {
			return "", nil, false
		}
		queries = append(queries, q)
	}
	return export, queries, len(data) == 0
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
				if err := c.errorReply(handle, errInval); err != nil {
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
				if err := c.errorReply(handle, errIO); err != nil {
					return err
				}
				continue
			}
			if err := c.dataReply(handle, offset, data); err != nil {
				return err
			}
		case cmdBlockStatus:
			if !c.structured || !c.baseAllocation || length == 0 || offset > uint64(e.Size) || uint64(length) > uint64(e.Size)-offset {
				if err := c.errorReply(handle, errInval); err != nil {
					return err
				}
				continue
			}
			extents, err := c.allocation(e, int64(offset), int64(length))
			if err != nil {
				if c.srv.Log != nil {
					c.srv.Log.Error("nbd block status failed", "export", e.Name, "offset", offset, "length", length, "error", err)
				}
				if err := c.errorReply(handle, errIO); err != nil {
					return err
				}
				continue
			}
			payload := appendBlockStatus(nil, baseAllocationID, extents)
			head := appendChunkHeader(nil, replyFlagDone, chunkBlockStatus, handle, uint32(len(payload)))
			if err := c.send(append(head, payload...)); err != nil {
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
			if err := c.errorReply(handle, errPerm); err != nil {
				return err
			}
		default:
			errno := uint32(errInval)
			if typ == cmdTrim || typ == cmdWriteZeroes { // a read-only export refuses them
				errno = errPerm
			}
			if err := c.errorReply(handle, errno); err != nil {
				return err
			}
		}
	}
}

// maxServerExtents bounds the extents of one block status reply; a
// client asks again from where they end.
const maxServerExtents = 16 << 10

// allocation is base:allocation of [off, off+length) of e: holes where
// its Disk knows the blocks are zero, data elsewhere.
func (c *session) allocation(e *Export, off, length int64) ([]Extent, error) {
	er, ok := e.Disk.(ExtentReader)
	if !ok {
		return []Extent{{Offset: off, Length: length}}, nil
	}
	var out []Extent
	for pos, end := off, off+length; pos < end && len(out) < maxServerExtents; {
		n, zero, err := er.Extent(c.ctx, pos)
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return nil, fmt.Errorf("export %s: extent of %d bytes at %d", e.Name, n, pos)
		}
		n = min(n, end-pos)
		var flags uint32
		if zero {
			flags = StateHole | StateZero
		}
		if k := len(out) - 1; k >= 0 && out[k].Flags == flags {
			out[k].Length += n
		} else {
			out = append(out, Extent{Offset: pos, Length: n, Flags: flags})
		}
		pos += n
	}
	return out, nil
}

// dataReply answers a read: one data chunk with structured replies, a
// simple reply without.
func (c *session) dataReply(handle []byte, offset uint64, data []byte) error {
	if !c.structured {
		return c.simpleReply(handle, 0, data)
	}
	head := appendChunkHeader(nil, replyFlagDone, chunkOffsetData, handle, uint32(8+len(data)))
	head = binary.BigEndian.AppendUint64(head, offset)
	if _, err := c.w.Write(head); err != nil {
		return err
	}
	if _, err := c.w.Write(data); err != nil {
		return err
	}
	return c.w.Flush()
}

// errorReply fails a request: an error chunk with structured replies (which
// a read needs), a simple reply without.
func (c *session) errorReply(handle []byte, errno uint32) error {
	if !c.structured {
		return c.simpleReply(handle, errno, nil)
	}
	payload := binary.BigEndian.AppendUint32(nil, errno)
	payload = binary.BigEndian.AppendUint16(payload, 0)
	return c.send(append(appendChunkHeader(nil, replyFlagDone, chunkError, handle, uint32(len(payload))), payload...))
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
