package chain

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// FuzzIndexV2 feeds the index v2 reader arbitrary files, as they are and
// with their checksums made right (resealIndexV2), so that the checks
// behind the checksums are reached too. Whatever the bytes, opening fails
// with ErrCorrupt or the reader serves only entries that pass their
// checks, in order, each found again by lookup; nothing panics.
func FuzzIndexV2(f *testing.F) {
	rng := rand.New(rand.NewPCG(21, 22))
	entries := randomIndexEntries(rng, 200, randomIDs(rng, 3))
	for _, n := range []int{200, 1, 0} {
		data, err := encodeIndexV2(slices.Clone(entries[:n]), time.Unix(1_800_000_000, 0))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(indexV2Magic))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkIndexV2Decoding(t, data)
		if sealed := resealIndexV2(data); sealed != nil {
			checkIndexV2Decoding(t, sealed)
		}
	})
}

func checkIndexV2Decoding(t *testing.T, data []byte) {
	ctx := context.Background()
	r, err := openIndexV2(ctx, "index/fuzz", readerAtRange{bytes.NewReader(data)}, int64(len(data)))
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("open: %v, want ErrCorrupt", err)
		}
		return
	}
	n := 0
	var prev ID
	err = r.iterate(ctx, func(pos int, e indexEntry) error {
		if pos != n || (n > 0 && bytes.Compare(prev[:], e.ID[:]) >= 0) {
			t.Fatalf("entry %d: blob %s at position %d, after %s", n, e.ID.Short(), pos, prev.Short())
		}
		if _, ok := slices.BinarySearchFunc(r.packs, e.Pack, func(a, b ID) int { return bytes.Compare(a[:], b[:]) }); !ok || e.check() != nil {
			t.Fatalf("entry %d: accepted %+v", n, e)
		}
		got, gotPos, ok, err := r.lookup(ctx, e.ID)
		if err == nil && (!ok || got != e || gotPos != pos) {
			t.Fatalf("entry %d: lookup gave %+v at %d (%v)", n, got, gotPos, ok)
		}
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("entry %d: lookup: %v", n, err)
		}
		prev = e.ID
		n++
		return nil
	})
	if err != nil && !errors.Is(err, ErrCorrupt) {
		t.Fatalf("iterate: %v", err)
	}
	if err == nil && n != r.count {
		t.Fatalf("iterated %d entries of %d", n, r.count)
	}
	for _, id := range []ID{{}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, prev} {
		if _, _, _, err := r.lookup(ctx, id); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("lookup: %v", err)
		}
	}
}

// resealIndexV2 returns a copy of data with the bucket and table checksums
// computed afresh, or nil when its header does not describe a layout of
// its size (then there is nothing to reseal).
func resealIndexV2(data []byte) []byte {
	if len(data) < indexV2HeaderSize+indexV2FilterHeaderSize+indexV2TrailerSize {
		return nil
	}
	var r indexV2Reader
	if r.parseHeader(data[:indexV2HeaderSize], int64(len(data))) != nil {
		return nil
	}
	l := r.layout
	out := slices.Clone(data)
	start := uint32(0)
	for b := range int64(1) << r.bits {
		end := binary.LittleEndian.Uint32(out[l.fanout+4*b:])
		if end < start || int(end) > r.count {
			break // the reader refuses this fanout anyway
		}
		entries := out[l.entries+int64(start)*indexV2EntrySize : l.entries+int64(end)*indexV2EntrySize]
		binary.LittleEndian.PutUint32(out[l.sums+4*b:], crc32.Checksum(entries, castagnoli))
		start = end
	}
	trailer := out[l.trailer:]
	sum := indexV2TablesChecksum(out[:l.entries], out[l.filter:l.trailer+48])
	binary.LittleEndian.PutUint32(trailer[48:], sum)
	return out
}
