package chain

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"slices"
	"time"
)

// An index file of format version 2 is immutable, sorted by blob ID, and
// made of fixed-stride entries, so that a reader finds a blob with one
// ranged read of a small bucket and keeps only the file's small tables in
// memory (see FORMAT.md, "Version 2: index files"):
//
//	"dpi2" | header | fanout | bucket checksums | packs | entries | filter | trailer
//
// All integers are little-endian.
const (
	indexV2Magic = "dpi2"

	// indexV2HeaderSize: magic (4), flags (2), fanout bits (1), reserved
	// (1), entry count (4), pack count (4), newest write time (8).
	indexV2HeaderSize = 24

	// indexV2EntrySize: ID (32), pack number (4), offset (4), stored length
	// (4), raw length (4), type (1), flags (1), reserved (2).
	indexV2EntrySize = 52

	// indexV2TrailerSize: the offsets of the fanout, the bucket checksums,
	// the packs, the entries, the filter and the trailer (8 each), the
	// checksum of the tables (4), magic (4).
	indexV2TrailerSize = 6*8 + 4 + 4

	// indexV2FilterHeaderSize: seed (8), segment length (4), segment count (4).
	indexV2FilterHeaderSize = 16

	// indexV2BucketTarget is how many entries a bucket holds on average: a
	// lookup reads one bucket, 64 × 52 bytes ≈ 3.3 KB, about one page.
	indexV2BucketTarget = 64

	// indexV2MaxFanoutBits bounds the fanout table at 2^16 buckets (512 KiB
	// with their checksums), enough for 4M entries at 64 a bucket.
	indexV2MaxFanoutBits = 16

	// maxIndexEntries is how many entries a writer puts in one file, so
	// that writing or merging one holds a bounded amount of memory
	// (about 25 MiB at this size) and a file is about 14 MB.
	maxIndexEntries = 1 << 18

	// indexV2MaxReadEntries is the most entries a reader accepts in one
	// file: more than any writer makes, so that maxIndexEntries may grow,
	// and few enough that a header's count is never absurd.
	indexV2MaxReadEntries = 1 << 24
)

// castagnoli is the CRC-32C table: hardware-accelerated on amd64 and arm64.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// indexEntry is one blob of a version 2 index file: where it is stored.
type indexEntry struct {
	packEntry
	Pack ID // the pack that holds the blob
}

// encodeIndexV2Entry writes e into b (indexV2EntrySize bytes) with its pack
// as number pack.
func encodeIndexV2Entry(b []byte, e indexEntry, pack uint32) {
	copy(b, e.ID[:])
	binary.LittleEndian.PutUint32(b[32:], pack)
	binary.LittleEndian.PutUint32(b[36:], e.Offset)
	binary.LittleEndian.PutUint32(b[40:], e.Length)
	binary.LittleEndian.PutUint32(b[44:], e.RawLength)
	b[48] = byte(e.Type)
	b[49] = 0
	if e.Compressed {
		b[49] = flagCompressed
	}
	b[50], b[51] = 0, 0
}

// indexV2Bucket returns the bucket of id in a fanout of 2^bits buckets:
// the ID's first bits bits.
func indexV2Bucket(id *ID, bits uint) int {
	if bits == 0 {
		return 0
	}
	return int(binary.BigEndian.Uint32(id[:4]) >> (32 - bits))
}

// indexV2FilterKey is what the filter holds for id: its first 8 bytes.
// IDs are uniform (BLAKE3, keyed or not), so 64 bits of one are a hash.
func indexV2FilterKey(id *ID) uint64 { return binary.LittleEndian.Uint64(id[:8]) }

// indexV2FanoutBits chooses the fanout for count entries: the fewest bits
// that make buckets of at most indexV2BucketTarget entries on average.
func indexV2FanoutBits(count int) uint {
	bits := uint(0)
	for bits < indexV2MaxFanoutBits && count > indexV2BucketTarget<<bits {
		bits++
	}
	return bits
}

// encodeIndexV2 returns an index file of entries, which it sorts by ID
// (in place). The file may list each blob only once and hold at most
// maxIndexEntries entries; written is when its newest entry was written.
func encodeIndexV2(entries []indexEntry, written time.Time) ([]byte, error) {
	if len(entries) > maxIndexEntries {
		return nil, fmt.Errorf("index file: %d entries, at most %d fit one file", len(entries), maxIndexEntries)
	}
	slices.SortFunc(entries, func(a, b indexEntry) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	w := newIndexV2Writer(maxIndexEntries)
	// Sized once: grown by appends, the buffers would hold up to twice the file.
	w.entries = make([]byte, 0, len(entries)*indexV2EntrySize)
	w.keys = make([]uint64, 0, len(entries))
	w.noteWritten(written.Unix())
	for _, e := range entries {
		if err := w.add(e); err != nil {
			return nil, err
		}
	}
	return w.finish()
}

// indexV2Layout is where the sections of an index file begin, in bytes from
// its start. It follows from the header's counts and the filter's size
// alone: a reader computes it and requires the trailer to agree.
type indexV2Layout struct {
	fanout, sums, packs, entries, filter, trailer, size int64
}

func indexV2LayoutOf(bits uint, packs, count, fingerprints int) indexV2Layout {
	var l indexV2Layout
	buckets := int64(1) << bits
	l.fanout = indexV2HeaderSize
	l.sums = l.fanout + 4*buckets
	l.packs = l.sums + 4*buckets
	l.entries = l.packs + IDSize*int64(packs)
	l.filter = l.entries + indexV2EntrySize*int64(count)
	l.trailer = l.filter + indexV2FilterHeaderSize + int64(fingerprints)
	l.size = l.trailer + indexV2TrailerSize
	return l
}

// offsets returns the section offsets in the order the trailer lists them.
func (l indexV2Layout) offsets() [6]int64 {
	return [6]int64{l.fanout, l.sums, l.packs, l.entries, l.filter, l.trailer}
}

// indexV2TablesChecksum is the CRC-32C of everything but the entries (each
// bucket has its own) and the checksum and magic at the end: head is the
// file up to the entries, tail from the filter to the trailer's checksum.
func indexV2TablesChecksum(head, tail []byte) uint32 {
	return crc32.Update(crc32.Checksum(head, castagnoli), castagnoli, tail)
}
