package nbd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNoMetaContext is wrapped by BlockStatus when the server did not agree
// to the meta context asked for: it does not know it, or (for a dirty
// bitmap) the bitmap does not exist.
var ErrNoMetaContext = errors.New("meta context not negotiated")

// ClientOptions configure Dial.
type ClientOptions struct {
	// MetaContexts to ask for, such as BaseAllocation and
	// DirtyBitmap("backup-0"). Those the server does not know are left out
	// (see Client.HasMetaContext).
	MetaContexts []string
	// Connections is how many connections to open when the server says
	// it allows several (NBD_FLAG_CAN_MULTI_CONN); 0 means 4. Without that
	// flag the client opens one.
	Connections int
	// InFlight bounds the requests outstanding on each connection; 0 means 16.
	InFlight int
	// MaxRequest bounds the bytes one read request asks for; larger reads
	// are split. 0 means 4 MiB, or less if the server says so.
	MaxRequest int
	// ExtraConnectionWait bounds the handshake of each connection after
	// the first; one that takes longer is given up, not waited for. 0
	// means 2 seconds.
	ExtraConnectionWait time.Duration
	// Dial opens a connection; nil means a net.Dialer's DialContext.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Client reads one export of an NBD server, over one or several
// connections, with several requests in flight on each. Every reply is
// checked against its request before it is believed; a server that breaks
// the protocol gets an error wrapping ErrProtocol that names it, and the
// connection it used is closed. A Client is safe for concurrent use.
type Client struct {
	server   string // the export's URI, for errors
	size     int64
	flags    uint16
	minBlock uint32
	maxReq   uint32
	contexts []string // negotiated meta contexts, sorted
	conns    []*clientConn
	next     atomic.Uint64
}

// Dial connects to the export uri names (see ParseURI) and negotiates
// with it: structured replies, the meta contexts asked for, and then the
// export itself (NBD_OPT_GO).
func Dial(ctx context.Context, uri string, opts ClientOptions) (*Client, error) {
	addr, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	return DialAddress(ctx, addr, opts)
}

// DialAddress is Dial with a parsed address.
func DialAddress(ctx context.Context, addr Address, opts ClientOptions) (*Client, error) {
	if len(opts.MetaContexts) > maxMetaContexts {
		return nil, fmt.Errorf("nbd: %d meta contexts asked for; at most %d", len(opts.MetaContexts), maxMetaContexts)
	}
	c := &Client{server: addr.String()}
	first, err := c.connect(ctx, addr, opts)
	if err != nil {
		return nil, err
	}
	c.conns = append(c.conns, first.clientConn)
	c.size = int64(first.size)
	c.flags = first.flags
	for name := range first.contexts {
		c.contexts = append(c.contexts, name)
	}
	slices.Sort(c.contexts)
	c.minBlock = max(first.minBlock, 1)
	c.maxReq = uint32(4 << 20)
	if opts.MaxRequest > 0 {
		c.maxReq = uint32(min(opts.MaxRequest, 1<<30))
	}
	if first.maxBlock > 0 {
		c.maxReq = min(c.maxReq, first.maxBlock)
	}
	c.maxReq -= c.maxReq % c.minBlock
	if c.maxReq == 0 {
		first.close()
		return nil, protocolError("nbd server %s: its largest request (%d) is smaller than its smallest block (%d)", c.server, first.maxBlock, c.minBlock)
	}
	n := 1
	if c.flags&transCanMultiConn != 0 {
		n = opts.Connections
		if n <= 0 {
			n = 4
		}
	}
	// More connections, at once. A server may advertise CAN_MULTI_CONN and
	// still serve one client at a time (qemu-nbd without -e greets the next
	// only when the first leaves): one that does not finish its handshake
	// within ExtraConnectionWait is given up, and the client makes do with
	// the connections it has.
	wait := opts.ExtraConnectionWait
	if wait <= 0 {
		wait = 2 * time.Second
	}
	extra := make([]*connection, n-1)
	errs := make([]error, n-1)
	var wg sync.WaitGroup
	for i := range extra {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, wait)
			defer cancel()
			extra[i], errs[i] = c.connect(cctx, addr, opts)
		})
	}
	wg.Wait()
	for i, more := range extra {
		if errs[i] != nil {
			continue
		}
		if more.size != first.size || !maps.Equal(more.contexts, first.contexts) {
			for _, m := range extra[i:] {
				if m != nil {
					m.close()
				}
			}
			c.Close()
			return nil, protocolError("nbd server %s: another connection to the same export got a different size or meta contexts", c.server)
		}
		c.conns = append(c.conns, more.clientConn)
	}
	if err := ctx.Err(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// connection is a clientConn with what its handshake told.
type connection struct {
	*clientConn
	flags              uint16
	minBlock, maxBlock uint32
}

// connect opens one connection and negotiates it.
func (c *Client) connect(ctx context.Context, addr Address, opts ClientOptions) (*connection, error) {
	dial := opts.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	conn, err := dial(ctx, addr.Network, addr.Addr)
	if err != nil {
		return nil, fmt.Errorf("nbd server %s: %w", c.server, err)
	}
	n, r, err := negotiateClient(ctx, conn, addr.Export, opts.MetaContexts)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("nbd server %s: export %q: %w", c.server, addr.Export, err)
	}
	inFlight := opts.InFlight
	if inFlight <= 0 {
		inFlight = 16
	}
	cc := newClientConn(c.server, conn, r, n, inFlight)
	go cc.readReplies()
	return &connection{
		clientConn: cc,
		flags:      n.info.flags,
		minBlock:   n.info.minBlock,
		maxBlock:   n.info.maxBlock,
	}, nil
}

// negotiateClient runs the client's handshake on conn; closing conn when
// ctx ends interrupts it.
func negotiateClient(ctx context.Context, conn io.ReadWriteCloser, export string, contexts []string) (negotiated, *bufio.Reader, error) {
	var n negotiated
	r, err := handshakeOn(ctx, conn, func(h *handshake) (err error) {
		n, err = h.negotiate(export, contexts)
		return err
	})
	return n, r, err
}

// handshakeOn runs f on a handshake over conn; closing conn when ctx ends
// interrupts it, and f's error is then ctx's. It returns the handshake's
// reader, which may hold bytes read ahead.
func handshakeOn(ctx context.Context, conn io.ReadWriteCloser, f func(*handshake) error) (*bufio.Reader, error) {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	h := &handshake{r: bufio.NewReaderSize(conn, 64<<10), w: conn}
	err := f(h)
	if err != nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return h.r, err
}

// negotiate runs the whole handshake for export.
func (h *handshake) negotiate(export string, contexts []string) (negotiated, error) {
	var n negotiated
	if err := h.greet(); err != nil {
		return n, err
	}
	var err error
	if n.structured, err = h.structuredReplies(); err != nil {
		return n, err
	}
	n.contexts = map[string]uint32{}
	if n.structured && len(contexts) > 0 {
		if n.contexts, err = h.setMetaContexts(export, contexts); err != nil {
			return n, err
		}
	}
	n.info, err = h.goExport(export)
	return n, err
}

// List returns the names of the exports of the server uri names (its
// export part is ignored), by NBD_OPT_LIST.
func List(ctx context.Context, uri string) ([]string, error) {
	addr, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, addr.Network, addr.Addr)
	if err != nil {
		return nil, fmt.Errorf("nbd server %s: %w", addr, err)
	}
	defer conn.Close()
	var names []string
	if _, err := handshakeOn(ctx, conn, func(h *handshake) (err error) {
		if err = h.greet(); err != nil {
			return err
		}
		if names, err = h.list(); err != nil {
			return err
		}
		h.abort()
		return nil
	}); err != nil {
		return nil, fmt.Errorf("nbd server %s: listing exports: %w", addr, err)
	}
	return names, nil
}

// Server is the URI of the export the client reads.
func (c *Client) Server() string { return c.server }

// Size is the export's size in bytes.
func (c *Client) Size() int64 { return c.size }

// Connections is how many connections the client uses.
func (c *Client) Connections() int { return len(c.conns) }

// MetaContexts are the meta contexts the server agreed to, sorted.
func (c *Client) MetaContexts() []string { return slices.Clone(c.contexts) }

// HasMetaContext says whether the server agreed to meta context name.
func (c *Client) HasMetaContext(name string) bool {
	_, ok := slices.BinarySearch(c.contexts, name)
	return ok
}

// Close disconnects every connection.
func (c *Client) Close() error {
	for _, conn := range c.conns {
		conn.close()
	}
	return nil
}

// conn picks the connection for the next request, in turn.
func (c *Client) conn() *clientConn {
	return c.conns[c.next.Add(1)%uint64(len(c.conns))]
}

// ReadAt fills p with the export's bytes at off. It splits large reads
// into requests the server accepts and sends them at once, over all the
// connections. A read past the end is an error. NBD cannot cancel a
// request: if ctx ends first, the connections with requests of this read
// in flight are closed, and later calls on them fail.
func (c *Client) ReadAt(ctx context.Context, p []byte, off int64) error {
	if off < 0 || off > c.size || int64(len(p)) > c.size-off {
		return fmt.Errorf("nbd server %s: read of %d bytes at %d is outside the export (%d bytes)", c.server, len(p), off, c.size)
	}
	// Requests start and end on the server's smallest block; reads that
	// do not are widened into a bounce buffer.
	if mb := int64(c.minBlock); off%mb != 0 || int64(len(p))%mb != 0 && off+int64(len(p)) != c.size {
		start := off - off%mb
		end := min((off+int64(len(p))+mb-1)/mb*mb, c.size)
		bounce := make([]byte, end-start)
		if err := c.ReadAt(ctx, bounce, start); err != nil {
			return err
		}
		copy(p, bounce[off-start:])
		return nil
	}
	if len(p) <= int(c.maxReq) {
		return c.read(ctx, p, off)
	}
	// Every piece is waited for, even after one fails: cancelling the
	// others would close their connections, as NBD cannot cancel a request.
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for pos := 0; pos < len(p); pos += int(c.maxReq) {
		piece := p[pos:min(pos+int(c.maxReq), len(p))]
		wg.Go(func() {
			if err := c.read(ctx, piece, off+int64(pos)); err != nil {
				once.Do(func() { first = err })
			}
		})
	}
	wg.Wait()
	return first
}

// read sends one read request.
func (c *Client) read(ctx context.Context, p []byte, off int64) error {
	if len(p) == 0 {
		return nil
	}
	return c.conn().do(ctx, &request{cmd: cmdRead, offset: uint64(off), length: uint32(len(p)), buf: p})
}

// maxBlockStatusLength bounds one NBD_CMD_BLOCK_STATUS request, so that
// its reply stays within maxBlockStatusExtents even at 512-byte extents.
const maxBlockStatusLength = 512 * maxBlockStatusExtents / 2

// BlockStatus returns the extents of meta context name (see
// MetaContexts) covering [off, off+length), in order, with neighbours of
// the same flags merged. It asks as many times as the server needs; each
// answer must start where asked and advance.
func (c *Client) BlockStatus(ctx context.Context, name string, off, length int64) ([]Extent, error) {
	all, err := c.BlockStatusOf(ctx, []string{name}, off, length)
	return all[name], err
}

// BlockStatusOf is BlockStatus for several meta contexts at once, by
// name. The server answers every request for every context the client
// negotiated, so asking for all of them together takes one round of
// requests instead of one per context: for a dirty bitmap and
// base:allocation, half the round trips.
func (c *Client) BlockStatusOf(ctx context.Context, names []string, off, length int64) (map[string][]Extent, error) {
	for _, name := range names {
		if !c.HasMetaContext(name) {
			return nil, fmt.Errorf("nbd server %s: block status of %q: %w", c.server, name, ErrNoMetaContext)
		}
	}
	if off < 0 || length < 0 || off > c.size || length > c.size-off {
		return nil, fmt.Errorf("nbd server %s: block status of %d bytes at %d is outside the export (%d bytes)", c.server, length, off, c.size)
	}
	out := make(map[string][]Extent, len(names))
	done := make(map[string]int64, len(names)) // where each context's extents have got to
	for _, name := range names {
		out[name], done[name] = nil, off
	}
	end := off + length
	for {
		// Ask from where the context that is furthest behind has got to;
		// the others' extents before their own point are known already.
		pos := end
		for _, at := range done {
			pos = min(pos, at)
		}
		if pos >= end {
			return out, nil
		}
		n := min(end-pos, maxBlockStatusLength)
		if mb := int64(c.minBlock); n%mb != 0 && pos+n != c.size {
			n = min((n+mb-1)/mb*mb, c.size-pos)
		}
		req := &request{cmd: cmdBlockStatus, offset: uint64(pos), length: uint32(n), status: map[uint32]bool{}, extents: map[string][]Extent{}}
		if err := c.conn().do(ctx, req); err != nil {
			return nil, err
		}
		for name, at := range done {
			extents, ok := req.extents[name]
			if !ok {
				return nil, protocolError("nbd server %s: block status of %d bytes at %d has no extents of %q", c.server, n, pos, name)
			}
			list := out[name]
			for _, e := range extents {
				if e.Offset >= end {
					break
				}
				if e.Offset+e.Length <= at {
					continue // known from an earlier answer
				}
				if e.Offset < at {
					e.Length -= at - e.Offset
					e.Offset = at
				}
				e.Length = min(e.Length, end-e.Offset)
				if last := len(list) - 1; last >= 0 && list[last].Flags == e.Flags && list[last].Offset+list[last].Length == e.Offset {
					list[last].Length += e.Length
				} else {
					list = append(list, e)
				}
				at = e.Offset + e.Length
			}
			out[name], done[name] = list, at
		}
	}
}
