package blockdiff

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"
	"unsafe"

	"github.com/diskpoint/diskpoint/chain"
	"golang.org/x/sync/errgroup"
)

// Parent is the previous restore point of the disk, which a scan compares
// against.
type Parent interface {
	// Size is the disk's size in the parent.
	Size() int64
	// SegmentIDs appends the parent's block IDs of segment j to dst.
	SegmentIDs(ctx context.Context, j int64, dst []chain.ID) ([]chain.ID, error)
}

// Options configure a Scan.
type Options struct {
	BlockSize     int // bytes per block; a power of two
	SegmentBlocks int // blocks per segment: the block map's leaf fanout
	// Workers read and hash segments in parallel; 0 means GOMAXPROCS, or,
	// for a ChangedOnly scan, a reader disk's ReadsInFlight if that is more.
	Workers int
	// Hash names a block; nil means chain.Hash (BLAKE3-256).
	Hash func([]byte) chain.ID
	// Parent, if set, is compared against: only blocks whose ID differs
	// from the parent's at the same place are passed to Store.
	Parent Parent
	// ChangedOnly says that Changed lists every byte range written since
	// Parent: only blocks touching them are read, the rest is taken from
	// Parent, and segments no range touches are reported as Reused. Without
	// a Parent it has no effect. Ranges must start inside the disk; their
	// ends are clipped to it.
	ChangedOnly bool
	Changed     []Range
	// Store is called, from several goroutines at once, for every block that
	// changed and is not all zeros. Block.Data is a private copy of the
	// block's bytes, the very bytes Block.ID was hashed from; it does not
	// change during the call, even while the disk is written, and is valid
	// only during the call (the scan reuses it afterwards). It is read-only.
	Store func(ctx context.Context, b Block) error
	// Segment is called for every segment, in order, from one goroutine.
	Segment func(ctx context.Context, s Segment) error
	// Progress, if set, is called after each segment with the running totals.
	Progress func(Stats)
}

// Block is a changed, non-zero block on its way to the store.
type Block struct {
	Index int64    // block number
	ID    chain.ID // the hash of Data, exactly as passed
	Data  []byte   // a private, stable copy; see Options.Store
}

// Segment is the outcome for SegmentBlocks consecutive blocks: their IDs
// (chain.ZeroID for all-zero blocks), or Reused when the changed-range list
// proves the parent's segment still holds.
type Segment struct {
	Index        int64
	IDs          []chain.ID
	Reused       bool
	ChangedBytes int64
}

// Stats counts a scan's work.
type Stats struct {
	Size         int64 `json:"size"`          // the disk's size
	Scanned      int64 `json:"scanned_bytes"` // bytes of the disk dealt with so far
	Read         int64 `json:"read_bytes"`    // bytes actually read
	Holes        int64 `json:"hole_bytes"`    // bytes skipped as holes, unread
	Zero         int64 `json:"zero_bytes"`    // bytes read and found zero
	Reused       int64 `json:"reused_bytes"`  // bytes taken from the parent unread
	ChangedBytes int64 `json:"changed_bytes"` // bytes of blocks that differ from the parent
}

func (s *Stats) add(o Stats) {
	s.Scanned += o.Scanned
	s.Read += o.Read
	s.Holes += o.Holes
	s.Zero += o.Zero
	s.Reused += o.Reused
	s.ChangedBytes += o.ChangedBytes
}

// maxRead is the most one pread asks for.
const maxRead = 4 << 20

// maxRun is the most bytes of consecutive blocks read (or mapped in) at once.
func (s *scanner) maxRun() int { return max(maxRead, s.opts.BlockSize) }

func errEndedEarly(d *Disk, off int64) error {
	return fmt.Errorf("read %s at %d: disk ended early (did it shrink while being read?)", d.Path, off)
}

// Scan reads disk, finds the changed blocks and reports every segment.
func Scan(ctx context.Context, disk *Disk, opts Options) (Stats, error) {
	s, err := newScanner(disk, opts)
	if err != nil {
		return Stats{Size: disk.Size}, err
	}
	return s.run(ctx)
}

type scanner struct {
	disk     *Disk
	opts     Options
	blocks   int64
	segments int64
	changed  []Range // merged, clipped; used only when opts.ChangedOnly
}

func newScanner(disk *Disk, opts Options) (*scanner, error) {
	if err := chain.CheckBlockSize(opts.BlockSize); err != nil {
		return nil, fmt.Errorf("scan %s: %w", disk.Path, err)
	}
	if opts.SegmentBlocks < 1 {
		return nil, fmt.Errorf("scan %s: segment of %d blocks", disk.Path, opts.SegmentBlocks)
	}
	if opts.Store == nil || opts.Segment == nil {
		return nil, errors.New("scan: Store and Segment callbacks are required")
	}
	defaultWorkers := opts.Workers <= 0
	if defaultWorkers {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.Hash == nil {
		opts.Hash = chain.Hash
	}
	if opts.Parent == nil {
		opts.ChangedOnly = false
	}
	if opts.ChangedOnly && defaultWorkers {
		// Short reads of changed ranges wait on the disk's peer more
		// than on the CPUs; whole-disk reads keep one worker per CPU.
		opts.Workers = max(opts.Workers, disk.readsInFlight)
	}
	s := &scanner{disk: disk, opts: opts}
	s.blocks = (disk.Size + int64(opts.BlockSize) - 1) / int64(opts.BlockSize)
	s.segments = (s.blocks + int64(opts.SegmentBlocks) - 1) / int64(opts.SegmentBlocks)
	if opts.ChangedOnly {
		for _, r := range MergeRanges(opts.Changed) {
			if r.Offset >= disk.Size {
				return nil, fmt.Errorf("scan %s: changed range at %d is past the disk's end (%d bytes)", disk.Path, r.Offset, disk.Size)
			}
			r.Length = min(r.Length, disk.Size-r.Offset)
			s.changed = append(s.changed, r)
		}
	}
	return s, nil
}

type segmentResult struct {
	seg   Segment
	stats Stats
}

func (s *scanner) run(ctx context.Context) (Stats, error) {
	total := Stats{Size: s.disk.Size}
	g, gctx := errgroup.WithContext(ctx)
	type job struct {
		index int64
		out   chan segmentResult
	}
	window := 2 * s.opts.Workers
	jobs := make(chan job, window)
	order := make(chan chan segmentResult, window)

	g.Go(func() error { // hand out segments in order
		defer close(jobs)
		defer close(order)
		for j := int64(0); j < s.segments; j++ {
			out := make(chan segmentResult, 1)
			select {
			case order <- out:
			case <-gctx.Done():
				return gctx.Err()
			}
			select {
			case jobs <- job{j, out}:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for range s.opts.Workers {
		g.Go(func() error {
			var w worker
			for jb := range jobs {
				res, err := s.segment(gctx, jb.index, &w)
				if err != nil {
					return err
				}
				jb.out <- res
			}
			return nil
		})
	}
	g.Go(func() error { // deliver segments in order
		for out := range order {
			var res segmentResult
			select {
			case res = <-out:
			case <-gctx.Done():
				return gctx.Err()
			}
			if err := s.opts.Segment(gctx, res.seg); err != nil {
				return err
			}
			total.add(res.stats)
			if s.opts.Progress != nil {
				s.opts.Progress(total)
			}
		}
		return nil
	})
	err := g.Wait()
	return total, err
}

// worker holds one worker's scratch space.
type worker struct {
	extents []Range
	touched []bool
	buf     []byte // for disks read with pread; allocated at the first such read
	// private holds a changed block of a mapped disk, copied out so that it
	// is hashed and stored as one set of bytes the guest cannot change.
	private []byte
}

// privateCopy copies a block of a mapped disk into the worker's own memory.
func (w *worker) privateCopy(data []byte) []byte {
	if len(w.private) < len(data) {
		w.private = make([]byte, len(data))
	}
	return w.private[:copy(w.private, data)]
}

func (s *scanner) segment(ctx context.Context, j int64, w *worker) (res segmentResult, err error) {
	bs := int64(s.opts.BlockSize)
	first := j * int64(s.opts.SegmentBlocks)
	n := int(min(int64(s.opts.SegmentBlocks), s.blocks-first))
	start := first * bs
	length := min(int64(n)*bs, s.disk.Size-start)
	res = segmentResult{seg: Segment{Index: j}, stats: Stats{Scanned: length}}
	// mapped is mapped at the first read; see read. A scan of a change list
	// reads a few scattered blocks per segment, which pread copies out for
	// less than mapping costs (mmap, populating and unmapping took a third
	// of the CPU of a 1% changed-range incremental of a 2 GiB image).
	var mapped *segmentMap
	defer guardFaults(s.disk, &mapped, &err)()
	// read returns the n bytes at off (at most maxRun): from the mapping
	// where the disk can be mapped, else read into the worker's buffer.
	// stable says the bytes are the worker's own (read with pread) and do
	// not change; mapped bytes change whenever the disk is written.
	read := func(off, n int64) (data []byte, stable bool, err error) {
		if err := ctx.Err(); err != nil {
			return nil, false, err
		}
		if mapped == nil && !s.opts.ChangedOnly {
			if mapped, err = s.disk.mapSegment(start, length); err != nil {
				return nil, false, err
			}
		}
		if mapped != nil {
			data, err = mapped.run(s.disk, off, n)
			return data, false, err
		}
		if w.buf == nil {
			w.buf = alignedBuffer(s.maxRun())
		}
		return w.buf[:n], true, s.readFull(ctx, w.buf[:n], off)
	}

	var parent []chain.ID
	var parentSize int64
	if s.opts.Parent != nil {
		parentSize = s.opts.Parent.Size()
	}
	if s.opts.ChangedOnly {
		w.touched = s.touchedBlocks(start, n, w.touched)
		fullSpan := start + int64(s.opts.SegmentBlocks)*bs
		if !anyTrue(w.touched) && (parentSize == s.disk.Size || fullSpan <= min(s.disk.Size, parentSize)) {
			res.seg.Reused = true
			res.stats.Reused = length
			return res, nil
		}
	}
	if s.opts.Parent != nil && start < parentSize {
		var err error
		if parent, err = s.opts.Parent.SegmentIDs(ctx, j, nil); err != nil {
			return res, fmt.Errorf("scan %s: parent segment %d: %w", s.disk.Path, j, err)
		}
	}
	// parentBlock is the parent's ID for block i of this segment when the
	// parent held a block of the same length there.
	parentBlock := func(i int) (chain.ID, bool) {
		b := start + int64(i)*bs
		if i >= len(parent) || min(bs, parentSize-b) != min(bs, s.disk.Size-b) {
			return chain.ZeroID, false
		}
		return parent[i], true
	}

	ids := make([]chain.ID, n)
	w.extents = s.disk.dataExtents(start, length, w.extents)
	// untouched: the change list proves the parent's block still holds.
	untouched := func(i int) bool {
		_, known := parentBlock(i)
		return s.opts.ChangedOnly && known && !w.touched[i]
	}
	inHole := func(i int) bool {
		return !overlaps(w.extents, start+int64(i)*bs, blockLen(start, i, bs, s.disk.Size))
	}
	for i := 0; i < n; {
		switch {
		case untouched(i):
			ids[i], _ = parentBlock(i)
			res.stats.Reused += blockLen(start, i, bs, s.disk.Size)
			i++
			continue
		case inHole(i): // zeros, known without reading
			l := blockLen(start, i, bs, s.disk.Size)
			res.stats.Holes += l
			if old, _ := parentBlock(i); !old.IsZero() {
				res.stats.ChangedBytes += l
			}
			i++
			continue
		}
		// Read a run of consecutive blocks that all need reading.
		end := i + 1
		for end < n && int64(end-i+1)*bs <= int64(s.maxRun()) && !untouched(end) && !inHole(end) {
			end++
		}
		off := start + int64(i)*bs
		runLen := min(int64(end-i)*bs, s.disk.Size-off)
		run, stable, err := read(off, runLen)
		if err != nil {
			return res, err
		}
		res.stats.Read += runLen
		for k := i; k < end; k++ {
			data := run[int64(k-i)*bs : min(int64(k-i+1)*bs, runLen)]
			prev, known := parentBlock(k)
			id, data := s.identify(data, stable, prev, known, w)
			ids[k] = id
			if id.IsZero() {
				res.stats.Zero += int64(len(data))
			}
			if id != prev {
				res.stats.ChangedBytes += int64(len(data))
				if !id.IsZero() {
					if err := s.opts.Store(ctx, Block{Index: first + int64(k), ID: id, Data: data}); err != nil {
						return res, err
					}
				}
			}
		}
		i = end
	}
	res.seg.IDs = ids
	res.seg.ChangedBytes = res.stats.ChangedBytes
	return res, nil
}

// identify names a block read from the disk and returns the bytes to store
// if it changed: bytes that are exactly the ones its ID was hashed from, and
// that stay so. A mapped disk's bytes change whenever the guest writes, so a
// changed block is copied into the worker's memory, and the copy is hashed
// and stored; hashing the mapping and storing it later would store other
// bytes than the ID names, and dedup would hand them on to every block that
// really holds what the ID names.
//
// The fast path stays: a block of a mapped disk that has a parent ID is
// hashed where it lies, and when that equals the parent's it is unchanged
// and nothing is copied or stored. That compare may see a torn block (the
// guest writing while it is hashed), but the hashes can only be equal if
// the bytes hashed were exactly the parent's content: content the block
// really held, which a crash-consistent read may return like any other
// state. A block read as zeros is stored as nothing, so needs no copy
// either.
func (s *scanner) identify(data []byte, stable bool, prev chain.ID, known bool, w *worker) (chain.ID, []byte) {
	switch {
	case stable: // the worker's own buffer: hash it as it is
		return BlockID(data, s.opts.Hash), data
	case known:
		if id := BlockID(data, s.opts.Hash); id == prev || id.IsZero() {
			return id, data
		}
	case IsZero(data):
		return chain.ZeroID, data
	}
	data = w.privateCopy(data)
	return BlockID(data, s.opts.Hash), data
}

func (s *scanner) readFull(ctx context.Context, p []byte, off int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n, err := s.disk.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if errors.Is(err, io.EOF) || err == nil {
		return errEndedEarly(s.disk, off+int64(n))
	}
	return fmt.Errorf("read %s at %d: %w", s.disk.Path, off, err)
}

// touchedBlocks marks which of the n blocks from start the changed ranges touch.
func (s *scanner) touchedBlocks(start int64, n int, dst []bool) []bool {
	dst = append(dst[:0], make([]bool, n)...)
	bs := int64(s.opts.BlockSize)
	end := start + int64(n)*bs
	i := sort.Search(len(s.changed), func(i int) bool { return s.changed[i].End() > start })
	for ; i < len(s.changed) && s.changed[i].Offset < end; i++ {
		r := s.changed[i]
		lo := (max(r.Offset, start) - start) / bs
		hi := (min(r.End(), end) - start - 1) / bs
		for b := lo; b <= hi; b++ {
			dst[b] = true
		}
	}
	return dst
}

func blockLen(start int64, i int, bs, size int64) int64 {
	return min(bs, size-start-int64(i)*bs)
}

func overlaps(extents []Range, off, length int64) bool {
	for _, e := range extents {
		if e.Offset < off+length && off < e.End() {
			return true
		}
	}
	return false
}

func anyTrue(b []bool) bool {
	for _, v := range b {
		if v {
			return true
		}
	}
	return false
}

// alignedBuffer returns n bytes starting on a 4 KiB boundary, as O_DIRECT
// reads require.
func alignedBuffer(n int) []byte {
	const align = 4096
	b := make([]byte, n+align)
	off := int(uintptr(unsafe.Pointer(&b[0])) & (align - 1))
	if off != 0 {
		off = align - off
	}
	return b[off : off+n : off+n]
}

var zeros = make([]byte, 64<<10)

// BlockID names a block's content the way a scan does: chain.ZeroID for a
// block of zeros, hash(data) otherwise.
func BlockID(data []byte, hash func([]byte) chain.ID) chain.ID {
	if IsZero(data) {
		return chain.ZeroID
	}
	return hash(data)
}

// IsZero reports whether b is all zero bytes, comparing 64 KiB at a time
// with memcmp-speed bytes.Equal.
func IsZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}
