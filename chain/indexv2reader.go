package chain

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"runtime"
	"runtime/debug"
	"sort"
	"sync"
	"unsafe"

	"github.com/FastFilter/xorfilter"
)

// indexV2Reader looks blobs up in one version 2 index file through ranged
// reads. It holds only the file's small tables (fanout, bucket checksums,
// packs, filter: about 1.4 bytes per entry); a lookup reads one bucket.
// It is safe for concurrent use.
type indexV2Reader struct {
	name    string // the object, for errors
	src     rangeReader
	layout  indexV2Layout
	bits    uint
	count   int
	written int64    // unix seconds: when the newest entry was written
	fanout  []uint32 // cumulative: bucket i is entries [fanout[i-1], fanout[i])
	sums    []uint32 // CRC-32C of each bucket's entries
	packs   []ID     // ascending
	filter  xorfilter.BinaryFuse8
	// mapped: the filter's fingerprints are in a mapping of the file (see
	// openIndexV2Mapped), read only through mayList.
	mapped bool
}

// mayList asks the filter whether the file may list id. A mapped filter
// must be read under a fault guard (guardMapped): the function that reads
// it, or one that calls it, defers recoverMappedFault with faults turned
// into panics. The stores map only files that are never truncated or
// written in place (ObjectMapper), so a fault means someone else truncated
// the file under the mapping: an error for this lookup, not a crash. The
// guard costs about 10 ns, so a lookup in many files takes it once
// (lookupIn, lookupSorted), not once a file.
func (r *indexV2Reader) mayList(id *ID) bool {
	ok := r.filter.Contains(indexV2FilterKey(id))
	// r owns the mapping: it must stay reachable while its bytes are read.
	runtime.KeepAlive(r)
	return ok
}

// mappedAt reports whether addr is in r's mapped filter.
func (r *indexV2Reader) mappedAt(addr uintptr) bool {
	fp := r.filter.Fingerprints
	base := uintptr(unsafe.Pointer(unsafe.SliceData(fp)))
	return r.mapped && addr >= base && addr < base+uintptr(len(fp))
}

// recoverMappedFault, deferred after debug.SetPanicOnFault(true), turns a
// fault inside one of files' mapped filters into *err naming the file.
// Any other panic goes on.
func recoverMappedFault(err *error, files []*indexV2Reader) {
	p := recover()
	if p == nil {
		return
	}
	if fault, ok := p.(interface{ Addr() uintptr }); ok {
		for _, r := range files {
			if r.mappedAt(fault.Addr()) {
				*err = fmt.Errorf("%s: its mapped filter cannot be read (the file was truncated under the mapping?): %v", r.name, p)
				return
			}
		}
	}
	panic(p)
}

// openIndexV2 reads the header and tables of the index file name, of size
// bytes, from src, and checks them.
func openIndexV2(ctx context.Context, name string, src rangeReader, size int64) (*indexV2Reader, error) {
	return openIndexV2Mapped(ctx, name, src, size, nil)
}

// tailMapper maps length bytes of an index file from off on (see
// ObjectMapper); an error wrapping errors.ErrUnsupported means "read it".
type tailMapper func(off, length int64) ([]byte, func() error, error)

// openIndexV2Mapped is openIndexV2 that, given a mapper, maps the filter
// and trailer instead of reading them: the filter, the only table that
// grows with the entries (1.16 bytes each), is then used where it lies,
// outside the Go heap. The mapping is given back when the reader is no
// longer reachable (runtime.AddCleanup), not by a Close: a lookup of
// another goroutine may be using it until then. The other tables are
// copied (decoded): about 0.13 bytes per entry.
func openIndexV2Mapped(ctx context.Context, name string, src rangeReader, size int64, mapper tailMapper) (*indexV2Reader, error) {
	if size < indexV2HeaderSize+indexV2FilterHeaderSize+indexV2TrailerSize {
		return nil, corrupt(name, "%d bytes is too short for an index file", size)
	}
	var header [indexV2HeaderSize]byte
	if err := src.ReadAt(ctx, header[:], 0); err != nil {
		return nil, fmt.Errorf("%s: read the header: %w", name, err)
	}
	r := &indexV2Reader{name: name, src: src}
	if err := r.parseHeader(header[:], size); err != nil {
		return nil, corrupt(name, "%v", err)
	}
	l := r.layout
	head := make([]byte, l.entries)
	copy(head, header[:])
	if err := src.ReadAt(ctx, head[indexV2HeaderSize:], indexV2HeaderSize); err != nil {
		return nil, fmt.Errorf("%s: read the tables: %w", name, err)
	}
	var tail []byte
	var unmap func() error
	if mapper != nil {
		data, u, err := mapper(l.filter, size-l.filter)
		switch {
		case err == nil:
			tail, unmap = data, u
		case errors.Is(err, ErrNotFound) || ctx.Err() != nil:
			return nil, fmt.Errorf("%s: map the filter: %w", name, err)
		}
		// Any other failure to map (a store that cannot, a file not as
		// long as listed, no address space) reads the bytes as before.
	}
	if tail == nil {
		tail = make([]byte, size-l.filter)
		if err := src.ReadAt(ctx, tail, l.filter); err != nil {
			return nil, fmt.Errorf("%s: read the filter: %w", name, err)
		}
	}
	if err := r.parseTables(head, tail); err != nil {
		if unmap != nil {
			unmap()
		}
		return nil, corrupt(name, "%v", err)
	}
	if unmap != nil {
		r.mapped = true
		runtime.AddCleanup(r, func(unmap func() error) { unmap() }, unmap)
	}
	return r, nil
}

// parseHeader checks the header and sets the counts and the layout they
// imply for a file of size bytes.
func (r *indexV2Reader) parseHeader(h []byte, size int64) error {
	if string(h[:4]) != indexV2Magic {
		return errors.New("not a version 2 index file (bad magic)")
	}
	if flags := binary.LittleEndian.Uint16(h[4:]); flags != 0 {
		return fmt.Errorf("unknown flags %#x", flags)
	}
	if h[6] > indexV2MaxFanoutBits {
		return fmt.Errorf("fanout of %d bits, at most %d", h[6], indexV2MaxFanoutBits)
	}
	if h[7] != 0 {
		return fmt.Errorf("reserved header byte is %#x", h[7])
	}
	r.bits = uint(h[6])
	count := binary.LittleEndian.Uint32(h[8:])
	packs := binary.LittleEndian.Uint32(h[12:])
	if count > indexV2MaxReadEntries {
		return fmt.Errorf("%d entries, at most %d", count, indexV2MaxReadEntries)
	}
	if packs > count || (packs == 0) != (count == 0) {
		return fmt.Errorf("%d packs for %d entries", packs, count)
	}
	r.count = int(count)
	r.written = int64(binary.LittleEndian.Uint64(h[16:]))
	r.layout = indexV2LayoutOf(r.bits, int(packs), r.count, 0)
	fingerprints := size - r.layout.size
	if fingerprints < 0 {
		return fmt.Errorf("%d bytes cannot hold %d entries, %d packs and a fanout of %d bits", size, count, packs, r.bits)
	}
	r.layout = indexV2LayoutOf(r.bits, int(packs), r.count, int(fingerprints))
	return nil
}

// parseTables checks and keeps the tables: head is the file up to the
// entries, tail from the filter to the end.
func (r *indexV2Reader) parseTables(head, tail []byte) error {
	l := r.layout
	trailer := tail[len(tail)-indexV2TrailerSize:]
	if string(trailer[52:]) != indexV2Magic {
		return errors.New("bad magic at the end")
	}
	for i, want := range l.offsets() {
		if got := binary.LittleEndian.Uint64(trailer[8*i:]); got != uint64(want) {
			return fmt.Errorf("the trailer puts section %d at %d, the header's counts at %d", i, got, want)
		}
	}
	sum := indexV2TablesChecksum(head, tail[:len(tail)-8])
	if want := binary.LittleEndian.Uint32(trailer[48:]); sum != want {
		return fmt.Errorf("tables checksum %08x, the trailer says %08x", sum, want)
	}

	buckets := 1 << r.bits
	r.fanout = make([]uint32, buckets)
	r.sums = make([]uint32, buckets)
	prev := uint32(0)
	for i := range buckets {
		end := binary.LittleEndian.Uint32(head[l.fanout+4*int64(i):])
		if end < prev {
			return fmt.Errorf("fanout decreases at bucket %d", i)
		}
		r.fanout[i], prev = end, end
		r.sums[i] = binary.LittleEndian.Uint32(head[l.sums+4*int64(i):])
	}
	if int(prev) != r.count {
		return fmt.Errorf("fanout counts %d entries, the header %d", prev, r.count)
	}
	r.packs = make([]ID, (l.entries-l.packs)/IDSize)
	for i := range r.packs {
		copy(r.packs[i][:], head[l.packs+IDSize*int64(i):])
		if i > 0 && bytes.Compare(r.packs[i-1][:], r.packs[i][:]) >= 0 {
			return fmt.Errorf("packs table out of order at %d", i)
		}
	}
	return r.parseFilter(tail[:len(tail)-indexV2TrailerSize])
}

// parseFilter checks the filter's parameters against its size, so that
// no key makes Contains index past its fingerprints.
func (r *indexV2Reader) parseFilter(f []byte) error {
	seed := binary.LittleEndian.Uint64(f)
	segLen := binary.LittleEndian.Uint32(f[8:])
	segCount := binary.LittleEndian.Uint32(f[12:])
	fingerprints := f[indexV2FilterHeaderSize:]
	switch {
	case segLen == 0 || segLen&(segLen-1) != 0 || segLen > 1<<18:
		return fmt.Errorf("filter segment length %d", segLen)
	case segCount == 0:
		return errors.New("filter of no segments")
	case (uint64(segCount)+2)*uint64(segLen) != uint64(len(fingerprints)) || len(fingerprints) > math.MaxUint32:
		return fmt.Errorf("filter of %d segments of %d is not %d bytes", segCount, segLen, len(fingerprints))
	}
	// Contains reads fingerprints h0, h1, h2 where h0 < segCount×segLen and
	// h1, h2 lie in the two segments after h0's: within (segCount+2)×segLen.
	r.filter = xorfilter.BinaryFuse8{
		Seed:               seed,
		SegmentLength:      segLen,
		SegmentLengthMask:  segLen - 1,
		SegmentCount:       segCount,
		SegmentCountLength: segCount * segLen,
		Fingerprints:       fingerprints,
	}
	return nil
}

// bucketRange returns the positions of bucket b's entries: [start, end).
func (r *indexV2Reader) bucketRange(b int) (int, int) {
	start := 0
	if b > 0 {
		start = int(r.fanout[b-1])
	}
	return start, int(r.fanout[b])
}

// readBuckets reads the entries of buckets [first, last) into buf, which
// is exactly their size, and checks each bucket's checksum, that its IDs
// are in its bucket and ascending.
func (r *indexV2Reader) readBuckets(ctx context.Context, first, last int, buf []byte) error {
	start, _ := r.bucketRange(first)
	if err := r.src.ReadAt(ctx, buf, r.layout.entries+int64(start)*indexV2EntrySize); err != nil {
		return fmt.Errorf("%s: read buckets %d-%d: %w", r.name, first, last-1, err)
	}
	for b := first; b < last; b++ {
		lo, hi := r.bucketRange(b)
		entries := buf[(lo-start)*indexV2EntrySize : (hi-start)*indexV2EntrySize]
		if sum := crc32.Checksum(entries, castagnoli); sum != r.sums[b] {
			return corrupt(r.name, "bucket %d: checksum %08x, the table says %08x", b, sum, r.sums[b])
		}
		for off := 0; off < len(entries); off += indexV2EntrySize {
			id := (*ID)(entries[off : off+IDSize])
			if indexV2Bucket(id, r.bits) != b {
				return corrupt(r.name, "entry %d: blob %s is not in bucket %d", lo+off/indexV2EntrySize, id.Short(), b)
			}
			if off > 0 && bytes.Compare(entries[off-indexV2EntrySize:off-indexV2EntrySize+IDSize], id[:]) >= 0 {
				return corrupt(r.name, "entry %d: blob %s out of order", lo+off/indexV2EntrySize, id.Short())
			}
		}
	}
	return nil
}

// decodeEntry decodes the entry at position pos from b.
func (r *indexV2Reader) decodeEntry(b []byte, pos int) (indexEntry, error) {
	var e indexEntry
	copy(e.ID[:], b)
	pack := binary.LittleEndian.Uint32(b[32:])
	e.Offset = binary.LittleEndian.Uint32(b[36:])
	e.Length = binary.LittleEndian.Uint32(b[40:])
	e.RawLength = binary.LittleEndian.Uint32(b[44:])
	e.Type = BlobType(b[48])
	e.Compressed = b[49]&flagCompressed != 0
	switch {
	case pack >= uint32(len(r.packs)):
		return e, corrupt(r.name, "entry %d: pack number %d of %d", pos, pack, len(r.packs))
	case b[49]&^flagCompressed != 0:
		return e, corrupt(r.name, "entry %d: unknown flags %#x", pos, b[49])
	case b[50] != 0 || b[51] != 0:
		return e, corrupt(r.name, "entry %d: reserved bytes are not zero", pos)
	}
	if err := e.check(); err != nil {
		return e, corrupt(r.name, "entry %d: %v", pos, err)
	}
	e.Pack = r.packs[pack]
	return e, nil
}

// bucketBuffers recycles lookups' bucket buffers: a lookup reads about
// 3 KiB, and a create makes one for every block it reads.
var bucketBuffers = sync.Pool{New: func() any { return new([]byte) }}

// lookup finds id. It returns the entry and its position, the entry's
// number in the file's ID order (GC keeps a bitmap over positions); ok is
// false when the file does not list id. Most misses read nothing: the
// filter answers them.
func (r *indexV2Reader) lookup(ctx context.Context, id ID) (e indexEntry, pos int, ok bool, err error) {
	if r.mapped {
		defer recoverMappedFault(&err, []*indexV2Reader{r})
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	}
	return r.lookupGuarded(ctx, id)
}

// lookupGuarded is lookup, called under a fault guard if r is mapped.
func (r *indexV2Reader) lookupGuarded(ctx context.Context, id ID) (e indexEntry, pos int, ok bool, err error) {
	if !r.mayList(&id) {
		return e, 0, false, nil
	}
	b := indexV2Bucket(&id, r.bits)
	lo, hi := r.bucketRange(b)
	if lo == hi {
		return e, 0, false, nil
	}
	bufp := bucketBuffers.Get().(*[]byte)
	defer bucketBuffers.Put(bufp)
	n := (hi - lo) * indexV2EntrySize
	if cap(*bufp) < n {
		*bufp = make([]byte, n)
	}
	buf := (*bufp)[:n]
	if err := r.readBuckets(ctx, b, b+1, buf); err != nil {
		return e, 0, false, err
	}
	k, found := sort.Find(hi-lo, func(k int) int {
		return bytes.Compare(id[:], buf[k*indexV2EntrySize:k*indexV2EntrySize+IDSize])
	})
	if !found {
		return e, 0, false, nil
	}
	e, err = r.decodeEntry(buf[k*indexV2EntrySize:], lo+k)
	if err != nil {
		return e, 0, false, err
	}
	return e, lo + k, true, nil
}

// indexV2IterateRun is how many bytes of entries iteration reads at once
// (at least one bucket): few reads, little memory.
const indexV2IterateRun = 64 << 10

// iterate calls fn for every entry in ID order, with its position,
// reading a run of buckets at a time.
func (r *indexV2Reader) iterate(ctx context.Context, fn func(pos int, e indexEntry) error) error {
	c := r.cursor(indexV2IterateRun)
	for {
		e, pos, ok, err := c.next(ctx)
		if err != nil || !ok {
			return err
		}
		if err := fn(pos, e); err != nil {
			return err
		}
	}
}

// indexV2Cursor walks a file's entries in ID order, holding one run of
// buckets: at most runBytes of entries, or one bucket when that is larger.
type indexV2Cursor struct {
	r        *indexV2Reader
	runBytes int
	bucket   int    // the next bucket to read
	run      []byte // the buckets read
	i        int    // the next entry of run
	start    int    // the position of run's first entry
}

func (r *indexV2Reader) cursor(runBytes int) *indexV2Cursor {
	return &indexV2Cursor{r: r, runBytes: runBytes}
}

// next returns the next entry and its position; ok is false at the end.
func (c *indexV2Cursor) next(ctx context.Context) (e indexEntry, pos int, ok bool, err error) {
	r := c.r
	if r.mapped {
		defer recoverMappedFault(&err, []*indexV2Reader{r})
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	}
	for c.i*indexV2EntrySize == len(c.run) {
		if c.bucket == len(r.fanout) {
			return e, 0, false, nil
		}
		first := c.bucket
		start, _ := r.bucketRange(first)
		last := first + 1
		for last < len(r.fanout) && (int(r.fanout[last])-start)*indexV2EntrySize <= c.runBytes {
			last++
		}
		n := (int(r.fanout[last-1]) - start) * indexV2EntrySize
		if cap(c.run) < n {
			c.run = make([]byte, n)
		}
		c.run = c.run[:n]
		if err := r.readBuckets(ctx, first, last, c.run); err != nil {
			c.run, c.i = c.run[:0], 0
			return e, 0, false, err
		}
		c.bucket, c.i, c.start = last, 0, start
	}
	pos = c.start + c.i
	e, err = r.decodeEntry(c.run[c.i*indexV2EntrySize:], pos)
	if err != nil {
		return e, 0, false, err
	}
	// A filter that leaves out an entry the file lists (its checksum
	// recomputed by whoever wrote it) makes lookups miss it: what walks
	// the file whole (verify, GC, merges) says so rather than serve it.
	if !r.mayList(&e.ID) {
		return e, 0, false, corrupt(r.name, "entry %d: blob %s is not in the file's filter, so lookups miss it", pos, e.ID.Short())
	}
	c.i++
	return e, pos, true, nil
}

// indexV2BatchRun is how many bytes of buckets a batched lookup reads at
// once, when the buckets it needs lie close together.
const indexV2BatchRun = 64 << 10

// lookupSorted looks up ids, which must be sorted and distinct, and calls
// found with the number in ids and the entry and position of each the
// file lists. It is a merge join of the IDs with the file: each bucket
// that may hold one of them is read at most once, and buckets needed one
// after another (at most a few apart) in one read of up to
// indexV2BatchRun bytes, where a lookup per ID reads a bucket per ID. IDs
// the filter rules out cost no read.
func (r *indexV2Reader) lookupSorted(ctx context.Context, ids []ID, found func(i int, e indexEntry, pos int) error) (err error) {
	if r.mapped {
		defer recoverMappedFault(&err, []*indexV2Reader{r})
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	}
	var run []byte
	for i := 0; i < len(ids); {
		if !r.mayList(&ids[i]) {
			i++
			continue
		}
		first := indexV2Bucket(&ids[i], r.bits)
		start, _ := r.bucketRange(first)
		// Extend the run over the buckets the next IDs need, while they
		// are close and the run stays within indexV2BatchRun.
		last, j := first, i+1
		for ; j < len(ids); j++ {
			b := indexV2Bucket(&ids[j], r.bits)
			if b == last {
				continue
			}
			if !r.mayList(&ids[j]) {
				continue
			}
			_, end := r.bucketRange(b)
			if b > last+4 || (end-start)*indexV2EntrySize > indexV2BatchRun {
				break
			}
			last = b
		}
		_, end := r.bucketRange(last)
		if end > start {
			n := (end - start) * indexV2EntrySize
			if cap(run) < n {
				run = make([]byte, n)
			}
			run = run[:n]
			if err := r.readBuckets(ctx, first, last+1, run); err != nil {
				return err
			}
			// Merge join: the IDs and the run's entries both ascend.
			k := 0
			for ; i < j; i++ {
				for k < end-start && bytes.Compare(run[k*indexV2EntrySize:k*indexV2EntrySize+IDSize], ids[i][:]) < 0 {
					k++
				}
				if k == end-start {
					i = j
					break
				}
				if !bytes.Equal(run[k*indexV2EntrySize:k*indexV2EntrySize+IDSize], ids[i][:]) {
					continue
				}
				e, err := r.decodeEntry(run[k*indexV2EntrySize:], start+k)
				if err != nil {
					return err
				}
				if err := found(i, e, start+k); err != nil {
					return err
				}
			}
		}
		i = j
	}
	return nil
}
