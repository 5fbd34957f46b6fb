package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
)

// clientConn is one connection of a Client in the transmission phase. Any
// number of goroutines send requests on it; one reader goroutine reads
// every reply and hands it to the request its handle names.
type clientConn struct {
	server     string // the server's URI, for errors
	conn       io.ReadWriteCloser
	r          *bufio.Reader
	size       uint64
	structured bool
	contexts   map[string]uint32 // name → ID on this connection
	names      map[uint32]string // ID → name

	slots chan struct{} // bounds the requests in flight
	wmu   sync.Mutex    // serialises writes of requests

	mu      sync.Mutex
	pending map[uint64]*request
	handle  uint64
	err     error         // why the connection is broken; nil while it works
	done    chan struct{} // closed when the reader goroutine ends
}

// request is one request in flight and what its replies said so far.
type request struct {
	cmd    uint16
	offset uint64
	length uint32
	buf    []byte // NBD_CMD_READ: where the data goes, len(buf) == length

	chunks  int             // chunks received so far, bounded by maxChunks
	covered intervals       // NBD_CMD_READ: the parts of buf the replies filled
	status  map[uint32]bool // NBD_CMD_BLOCK_STATUS: the contexts that answered
	extents map[string][]Extent

	remote error // the first error the server replied with
	err    error // the connection failed, or the server broke the protocol
	done   chan struct{}
}

// newClientConn is a connection that finished its handshake; r is the
// reader the handshake used (it may hold bytes read ahead). The caller
// starts its reader: go c.readReplies().
func newClientConn(server string, conn io.ReadWriteCloser, r *bufio.Reader, n negotiated, inFlight int) *clientConn {
	c := &clientConn{
		server:     server,
		conn:       conn,
		r:          r,
		size:       n.info.size,
		structured: n.structured,
		contexts:   n.contexts,
		names:      map[uint32]string{},
		slots:      make(chan struct{}, inFlight),
		pending:    map[uint64]*request{},
		done:       make(chan struct{}),
	}
	for name, id := range n.contexts {
		c.names[id] = name
	}
	return c
}

// do sends req and waits for its replies. If ctx ends first, the
// connection is closed (NBD cannot cancel a request, and the reader must
// not write into buf after do returns), which fails the other requests
// in flight on it too.
func (c *clientConn) do(ctx context.Context, req *request) error {
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return c.failure()
	}
	defer func() { <-c.slots }()
	req.done = make(chan struct{})
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return c.err
	}
	c.handle++
	handle := c.handle
	c.pending[handle] = req
	c.mu.Unlock()

	head := appendRequest(make([]byte, 0, requestHeaderSize), 0, req.cmd, handle, req.offset, req.length)
	c.wmu.Lock()
	_, err := c.conn.Write(head)
	c.wmu.Unlock()
	if err != nil {
		c.fail(fmt.Errorf("nbd server %s: sending a request: %w", c.server, err))
	}
	select {
	case <-req.done:
	case <-ctx.Done():
		c.fail(fmt.Errorf("nbd server %s: connection closed, a request was cancelled: %w", c.server, ctx.Err()))
		<-req.done
		return ctx.Err()
	}
	if req.err != nil {
		return req.err
	}
	return req.remote
}

// failure is why the connection broke.
func (c *clientConn) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		return fmt.Errorf("nbd server %s: connection closed", c.server)
	}
	return c.err
}

// fail breaks the connection for good: it closes it, so that the reader
// stops and fails every request in flight with err, and every later one.
// Only the reader completes requests: it may be filling one's buffer.
func (c *clientConn) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
	}
	c.conn.Close()
}

// close says goodbye (NBD_CMD_DISC) and closes the connection, and waits
// for the reader to end.
func (c *clientConn) close() {
	c.wmu.Lock()
	c.conn.Write(appendRequest(nil, 0, cmdDisc, 0, 0, 0)) // best effort: we hang up anyway
	c.wmu.Unlock()
	c.fail(fmt.Errorf("nbd server %s: client closed", c.server))
	<-c.done
}

// readReplies reads replies until the connection fails, then fails the
// requests still in flight.
func (c *clientConn) readReplies() {
	defer close(c.done)
	var err error
	for err == nil {
		err = c.readReply()
	}
	if errors.Is(err, io.EOF) {
		err = fmt.Errorf("connection closed by the server: %w", io.ErrUnexpectedEOF)
	}
	c.fail(fmt.Errorf("nbd server %s: %w", c.server, err))
	c.mu.Lock()
	defer c.mu.Unlock()
	for h, req := range c.pending {
		delete(c.pending, h)
		req.err = c.err
		close(req.done)
	}
}

// lookup finds the request handle names.
func (c *clientConn) lookup(handle uint64) (*request, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	req, ok := c.pending[handle]
	if !ok {
		return nil, protocolError("reply to handle %d, which is not in flight", handle)
	}
	return req, nil
}

// finish completes req: the last reply for its handle came.
func (c *clientConn) finish(handle uint64, req *request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending[handle] == req {
		delete(c.pending, handle)
		close(req.done)
	}
}

// readReply reads one reply, or one chunk of a structured reply.
func (c *clientConn) readReply() error {
	var magic [4]byte
	if _, err := io.ReadFull(c.r, magic[:]); err != nil {
		return err
	}
	switch m := binary.BigEndian.Uint32(magic[:]); m {
	case magicSimpleReply:
		return c.readSimpleReply()
	case magicStructuredReply:
		if !c.structured {
			return protocolError("structured reply, which was not negotiated")
		}
		return c.readChunk()
	default:
		return protocolError("reply magic %#x", m)
	}
}

func (c *clientConn) readSimpleReply() error {
	var head [simpleReplySize - 4]byte
	if _, err := io.ReadFull(c.r, head[:]); err != nil {
		return unexpected(err)
	}
	errno, handle := binary.BigEndian.Uint32(head[:]), binary.BigEndian.Uint64(head[4:])
	req, err := c.lookup(handle)
	if err != nil {
		return err
	}
	switch {
	case errno != 0:
		req.remote = fmt.Errorf("nbd server %s: %s of %d bytes at %d: %s", c.server, cmdName(req.cmd), req.length, req.offset, errnoName(errno))
	case req.cmd == cmdRead:
		if _, err := io.ReadFull(c.r, req.buf); err != nil {
			return fmt.Errorf("short read of %d bytes at %d: %w", req.length, req.offset, unexpected(err))
		}
		req.covered.add(0, uint64(req.length))
	case req.cmd == cmdBlockStatus:
		return protocolError("simple reply to NBD_CMD_BLOCK_STATUS")
	}
	c.finish(handle, req)
	return nil
}

// maxChunks bounds the chunks of one reply: one per 512-byte sector a
// request covers is more than any server splits it into, and it keeps the
// work of checking their overlaps small.
func maxChunks(length uint32) int { return 64 + int(length/512) }

// maxChunkPayload bounds chunks that carry no read data.
const maxChunkPayload = 4 + 8*maxBlockStatusExtents

func (c *clientConn) readChunk() error {
	var head [structuredReplySize - 4]byte
	if _, err := io.ReadFull(c.r, head[:]); err != nil {
		return unexpected(err)
	}
	flags, typ := binary.BigEndian.Uint16(head[:]), binary.BigEndian.Uint16(head[2:])
	handle, length := binary.BigEndian.Uint64(head[4:]), binary.BigEndian.Uint32(head[12:])
	req, err := c.lookup(handle)
	if err != nil {
		return err
	}
	if req.chunks++; req.chunks > maxChunks(req.length) {
		return protocolError("more than %d chunks in reply to a %s of %d bytes", maxChunks(req.length), cmdName(req.cmd), req.length)
	}
	switch {
	case typ == chunkOffsetData && req.cmd == cmdRead:
		if err := c.readData(req, length); err != nil {
			return err
		}
	case typ == chunkNone:
		if length != 0 || flags&replyFlagDone == 0 {
			return protocolError("NBD_REPLY_TYPE_NONE of %d bytes, flags %#x", length, flags)
		}
	default:
		if length > maxChunkPayload {
			return protocolError("chunk type %d of %d bytes", typ, length)
		}
		payload := make([]byte, length)
		if _, err := io.ReadFull(c.r, payload); err != nil {
			return fmt.Errorf("chunk type %d of %d bytes: %w", typ, length, unexpected(err))
		}
		if err := c.chunk(req, typ, payload); err != nil {
			return err
		}
	}
	if flags&replyFlagDone == 0 {
		return nil
	}
	if err := c.complete(req); err != nil {
		return err
	}
	c.finish(handle, req)
	return nil
}

// readData reads an NBD_REPLY_TYPE_OFFSET_DATA chunk straight into the
// request's buffer, after checking that it lies within the request and
// overlaps nothing already read.
func (c *clientConn) readData(req *request, length uint32) error {
	if length < 8 {
		return protocolError("data chunk of %d bytes", length)
	}
	var off [8]byte
	if _, err := io.ReadFull(c.r, off[:]); err != nil {
		return unexpected(err)
	}
	start, n := binary.BigEndian.Uint64(off[:]), uint64(length-8)
	rel, err := req.claim("data chunk", start, n)
	if err != nil {
		return err
	}
	if _, err := io.ReadFull(c.r, req.buf[rel:rel+n]); err != nil {
		return fmt.Errorf("short read of %d bytes at %d: %w", n, start, unexpected(err))
	}
	return nil
}

// claim checks that a chunk (what) of n bytes at start lies within the
// read req and overlaps no chunk before it, and marks it read; it returns
// the chunk's place in req.buf.
func (req *request) claim(what string, start, n uint64) (uint64, error) {
	if n == 0 || start < req.offset || start-req.offset > uint64(req.length) || n > uint64(req.length)-(start-req.offset) {
		return 0, protocolError("%s of %d bytes at %d, outside the read of %d bytes at %d", what, n, start, req.length, req.offset)
	}
	rel := start - req.offset
	if !req.covered.add(rel, n) {
		return 0, protocolError("%s of %d bytes at %d overlaps another chunk", what, n, start)
	}
	return rel, nil
}

// chunk applies a chunk other than data to req.
func (c *clientConn) chunk(req *request, typ uint16, payload []byte) error {
	switch {
	case typ&chunkErrorBit != 0:
		errno, msg, err := parseErrorChunk(typ, payload)
		if err != nil {
			return protocolError("%v", err)
		}
		if req.remote == nil {
			req.remote = fmt.Errorf("nbd server %s: %s of %d bytes at %d: %s: %s", c.server, cmdName(req.cmd), req.length, req.offset, errnoName(errno), printable(msg))
		}
	case typ == chunkOffsetHole && req.cmd == cmdRead:
		if len(payload) != 12 {
			return protocolError("hole chunk of %d bytes", len(payload))
		}
		n := uint64(binary.BigEndian.Uint32(payload[8:]))
		rel, err := req.claim("hole", binary.BigEndian.Uint64(payload), n)
		if err != nil {
			return err
		}
		clear(req.buf[rel : rel+n])
	case typ == chunkBlockStatus && req.cmd == cmdBlockStatus:
		id, extents, err := parseBlockStatus(payload, req.offset)
		if err != nil {
			return protocolError("%v", err)
		}
		name, ok := c.names[id]
		if !ok {
			return protocolError("block status for meta context ID %d, which was not negotiated", id)
		}
		if req.status[id] {
			return protocolError("block status for meta context %q twice in one reply", name)
		}
		req.status[id] = true
		end := req.offset + uint64(req.length)
		for i, e := range extents {
			eEnd := uint64(e.Offset + e.Length)
			if eEnd > c.size {
				return protocolError("block status of %q up to %d, past the end of the export (%d bytes)", name, eEnd, c.size)
			}
			// Only the last extent may reach past the request, as the protocol allows.
			if i < len(extents)-1 && eEnd >= end && eEnd != end {
				return protocolError("block status of %q: extent %d ends at %d, past the request's end %d, and is not the last", name, i, eEnd, end)
			}
		}
		req.extents[name] = extents
	default:
		return protocolError("chunk type %d in reply to %s", typ, cmdName(req.cmd))
	}
	return nil
}

// complete checks, at a reply's last chunk, that the reply was whole.
func (c *clientConn) complete(req *request) error {
	if req.remote != nil {
		return nil // a failed request need not cover anything
	}
	switch req.cmd {
	case cmdRead:
		if got := req.covered.total(); got != uint64(req.length) {
			return protocolError("read of %d bytes at %d answered with %d bytes", req.length, req.offset, got)
		}
	case cmdBlockStatus:
		if len(req.status) == 0 {
			return protocolError("block status of %d bytes at %d answered with no extents", req.length, req.offset)
		}
	}
	return nil
}

func cmdName(cmd uint16) string {
	switch cmd {
	case cmdRead:
		return "read"
	case cmdBlockStatus:
		return "block status"
	}
	return fmt.Sprintf("command %d", cmd)
}

// printable keeps a server's message readable and short in our errors.
func printable(s string) string {
	b := []rune{}
	for _, r := range s {
		if len(b) >= 200 {
			return string(b) + "…"
		}
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			r = '?'
		}
		b = append(b, r)
	}
	return string(b)
}

// intervals is a set of disjoint half-open ranges [start, end), sorted.
type intervals struct{ r [][2]uint64 }

// add adds [start, start+n); false if it overlaps one already there.
func (s *intervals) add(start, n uint64) bool {
	end := start + n
	i := sort.Search(len(s.r), func(i int) bool { return s.r[i][1] > start })
	if i < len(s.r) && s.r[i][0] < end {
		return false
	}
	// Merge with neighbours that touch, so that in-order chunks keep one range.
	if i > 0 && s.r[i-1][1] == start {
		s.r[i-1][1] = end
		if i < len(s.r) && s.r[i][0] == end {
			s.r[i-1][1] = s.r[i][1]
			s.r = append(s.r[:i], s.r[i+1:]...)
		}
		return true
	}
	if i < len(s.r) && s.r[i][0] == end {
		s.r[i][0] = start
		return true
	}
	s.r = append(s.r, [2]uint64{})
	copy(s.r[i+1:], s.r[i:])
	s.r[i] = [2]uint64{start, end}
	return true
}

func (s *intervals) total() uint64 {
	var t uint64
	for _, r := range s.r {
		t += r[1] - r[0]
	}
	return t
}
