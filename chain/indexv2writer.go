package chain

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"slices"

	"github.com/FastFilter/xorfilter"
)

// indexV2Writer builds one version 2 index file from entries given in
// ascending ID order, so that a merge can stream into it. It holds the
// encoded entries (52 bytes each) and one filter key (8 bytes) per entry
// until finish: its memory is bounded by its limit, not by the input.
type indexV2Writer struct {
	limit   int
	entries []byte        // encoded; the pack field holds a provisional number until finish
	keys    []uint64      // filter keys, one per entry
	packs   []ID          // in order of first use
	packNum map[ID]uint32 // provisional numbers
	last    ID            // the last ID added, to enforce the order
	written int64         // unix seconds: the newest write time noted
	filter  xorfilter.BinaryFuseBuilder
	// file, once presize has said what the next file holds: the buffer
	// the file is made in, its entries encoded in place at front (the
	// offset of the entries section), so that finish copies none of them.
	file  []byte
	front int64
}

// presize prepares the next file of count entries of packs distinct packs
// in one buffer: finish then fills in the tables around the entries
// instead of copying them into a file of its own, which would hold a
// checkpoint's entries twice at the peak of a create. The filter's size
// is known only once it is built: the buffer has room for a generous
// bound, and finish copies after all if the filter outgrows it.
func (w *indexV2Writer) presize(count, packs int) {
	front := indexV2LayoutOf(indexV2FanoutBits(count), packs, count, 0).entries
	room := int64(count)*indexV2EntrySize + indexV2FilterHeaderSize + 2*int64(count) + 1<<16 + indexV2TrailerSize
	w.file = make([]byte, front, front+room)
	w.front = front
	w.entries = w.file[front:front]
	w.keys = slices.Grow(w.keys[:0], count)
}

func newIndexV2Writer(limit int) *indexV2Writer {
	return &indexV2Writer{limit: limit, packNum: map[ID]uint32{}}
}

// len returns how many entries the file holds so far.
func (w *indexV2Writer) len() int { return len(w.keys) }

// full reports whether the file holds its limit of entries.
func (w *indexV2Writer) full() bool { return len(w.keys) >= w.limit }

// noteWritten records that a blob of the file was written at unix (seconds);
// the file's header keeps the newest such time.
func (w *indexV2Writer) noteWritten(unix int64) {
	w.written = max(w.written, unix)
}

// add appends e, whose ID must be greater than every ID added before.
func (w *indexV2Writer) add(e indexEntry) error {
	if err := e.check(); err != nil {
		return fmt.Errorf("index file: %w", err)
	}
	if w.len() > 0 && bytes.Compare(e.ID[:], w.last[:]) <= 0 {
		if e.ID == w.last {
			return fmt.Errorf("index file: blob %s listed twice", e.ID.Short())
		}
		return fmt.Errorf("index file: blob %s added after %s: entries must come in ascending order", e.ID.Short(), w.last.Short())
	}
	if w.full() {
		return fmt.Errorf("index file: more than %d entries", w.limit)
	}
	num, ok := w.packNum[e.Pack]
	if !ok {
		num = uint32(len(w.packs))
		w.packs = append(w.packs, e.Pack)
		w.packNum[e.Pack] = num
	}
	n := len(w.entries)
	w.entries = slices.Grow(w.entries, indexV2EntrySize)[:n+indexV2EntrySize]
	encodeIndexV2Entry(w.entries[n:], e, num)
	w.keys = append(w.keys, indexV2FilterKey(&e.ID))
	w.last = e.ID
	return nil
}

// finish returns the file of the entries added, and empties w for the next
// file (keeping its buffers).
func (w *indexV2Writer) finish() ([]byte, error) {
	count := w.len()
	// The packs table is sorted, so that a file's bytes depend only on its
	// entries and a pack's number can be found by binary search.
	sorted := slices.Clone(w.packs)
	slices.SortFunc(sorted, func(a, b ID) int { return bytes.Compare(a[:], b[:]) })
	renumber := make([]uint32, len(w.packs))
	for i, id := range sorted {
		renumber[w.packNum[id]] = uint32(i)
	}
	for off := 0; off < len(w.entries); off += indexV2EntrySize {
		field := w.entries[off+32 : off+36]
		binary.LittleEndian.PutUint32(field, renumber[binary.LittleEndian.Uint32(field)])
	}

	bits := indexV2FanoutBits(count)
	buckets := 1 << bits
	fanout := make([]uint32, buckets)
	for off := 0; off < len(w.entries); off += indexV2EntrySize {
		fanout[indexV2Bucket((*ID)(w.entries[off:off+IDSize]), bits)]++
	}
	for i := 1; i < buckets; i++ {
		fanout[i] += fanout[i-1] // cumulative: entries in buckets 0..i
	}

	filter, err := xorfilter.BuildBinaryFuse[uint8](&w.filter, w.keys)
	if err != nil {
		return nil, fmt.Errorf("index file: build the filter of %d entries: %w", count, err)
	}

	l := indexV2LayoutOf(bits, len(sorted), count, len(filter.Fingerprints))
	var file []byte
	inPlace := count > 0 && w.file != nil && w.front == l.entries && int64(cap(w.file)) >= l.size && &w.file[:l.size][w.front] == &w.entries[0]
	if inPlace {
		file = w.file[:l.size] // the entries are in place; the rest is zero
	} else {
		file = make([]byte, l.size)
		copy(file[l.entries:], w.entries)
	}
	w.file, w.front = nil, 0
	copy(file, indexV2Magic)
	// flags (2) and reserved (1) stay zero
	file[6] = byte(bits)
	binary.LittleEndian.PutUint32(file[8:], uint32(count))
	binary.LittleEndian.PutUint32(file[12:], uint32(len(sorted)))
	binary.LittleEndian.PutUint64(file[16:], uint64(w.written))
	start := uint32(0)
	for i, end := range fanout {
		binary.LittleEndian.PutUint32(file[l.fanout+4*int64(i):], end)
		sum := crc32.Checksum(w.entries[int(start)*indexV2EntrySize:int(end)*indexV2EntrySize], castagnoli)
		binary.LittleEndian.PutUint32(file[l.sums+4*int64(i):], sum)
		start = end
	}
	for i, id := range sorted {
		copy(file[l.packs+IDSize*int64(i):], id[:])
	}
	f := file[l.filter:]
	binary.LittleEndian.PutUint64(f, filter.Seed)
	binary.LittleEndian.PutUint32(f[8:], filter.SegmentLength)
	binary.LittleEndian.PutUint32(f[12:], filter.SegmentCount)
	copy(f[indexV2FilterHeaderSize:], filter.Fingerprints)
	t := file[l.trailer:]
	for i, off := range l.offsets() {
		binary.LittleEndian.PutUint64(t[8*i:], uint64(off))
	}
	binary.LittleEndian.PutUint32(t[48:], indexV2TablesChecksum(file[:l.entries], file[l.filter:l.trailer+48]))
	copy(t[52:], indexV2Magic)

	if inPlace {
		w.entries = nil // the file's now: the caller may keep it
	}
	w.entries, w.keys, w.packs, w.written = w.entries[:0], w.keys[:0], w.packs[:0], 0
	clear(w.packNum)
	return file, nil
}
