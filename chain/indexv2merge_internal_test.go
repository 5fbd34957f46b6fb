package chain

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"
)

func TestIndexV2MergeEqualsSortedUnion(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(7, 8))
	packs := randomIDs(rng, 40)
	shared := randomIndexEntries(rng, 300, packs) // IDs that several inputs list
	var inputs []*indexV2Reader
	var lists [][]indexEntry
	newest := int64(0)
	for i := range 30 {
		entries := randomIndexEntries(rng, rng.IntN(500), packs)
		for _, e := range shared {
			if rng.IntN(4) == 0 {
				e.Pack = packs[rng.IntN(len(packs))]
				e.Offset = rng.Uint32N(1 << 20)
				entries = append(entries, e)
			}
		}
		written := time.Unix(1_700_000_000+int64(rng.IntN(1000)), 0)
		newest = max(newest, written.Unix())
		data := mustEncodeIndexV2(t, entries, written)
		lists = append(lists, entries) // sorted by the encoder
		r, _ := openIndexV2Bytes(t, "index/in"+string(rune('a'+i)), data)
		inputs = append(inputs, r)
	}
	gone := map[ID]bool{}
	for _, p := range packs[:10] {
		gone[p] = true
	}
	keep := func(e indexEntry) bool { return !gone[e.Pack] }

	// What the merge must give: for each ID, the first input's entry that keep accepts.
	first := map[ID]indexEntry{}
	for _, list := range lists {
		for _, e := range list {
			if _, ok := first[e.ID]; !ok && keep(e) {
				first[e.ID] = e
			}
		}
	}
	var want []indexEntry
	for _, e := range first {
		want = append(want, e)
	}
	sortIndexEntries(want)

	const perFile = 700
	var got []indexEntry
	stats, err := mergeIndexV2(ctx, inputs, keep, perFile, func(ctx context.Context, file []byte) error {
		r, _ := openIndexV2Bytes(t, "index/out", file)
		if r.count > perFile || r.count == 0 {
			t.Errorf("a merged file of %d entries", r.count)
		}
		if r.written != newest {
			t.Errorf("a merged file written at %d, the newest input at %d", r.written, newest)
		}
		got = append(got, allIndexV2Entries(t, r)...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("merged %d entries, want %d (the first kept entry of each ID, in ID order)", len(got), len(want))
	}
	total := 0
	for _, l := range lists {
		total += len(l)
	}
	if stats.Read != total || stats.Written != len(want) || stats.Read != stats.Dropped+stats.Duplicates+stats.Written ||
		stats.Duplicates == 0 || stats.Dropped == 0 || stats.Files != (len(want)+perFile-1)/perFile {
		t.Errorf("stats %+v; %d entries in, %d out", stats, total, len(want))
	}

	// A failed put stops the merge with its error.
	boom := errors.New("store down")
	if _, err := mergeIndexV2(ctx, inputs, keep, perFile, func(context.Context, []byte) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("merge with a failing put: %v", err)
	}
}

// A merge holds one bucket per input and one output file, whatever the
// inputs hold in total: each read is one bucket, and the live heap when a
// file is handed over stays far below the entries merged so far.
func TestIndexV2MergeBoundedMemory(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(9, 10))
	const inputs = 8
	perInput, perFile := 1<<16, 1<<14
	if testing.Short() {
		perInput, perFile = 1<<15, 1<<13
	}
	var readers []*indexV2Reader
	var sources []*countingRange
	largestBucket := 0
	for range inputs {
		r, src := openIndexV2Bytes(t, "index/in", mustEncodeIndexV2(t, randomIndexEntries(rng, perInput, randomIDs(rng, 256)), time.Now()))
		for b := range r.fanout {
			lo, hi := r.bucketRange(b)
			largestBucket = max(largestBucket, (hi-lo)*indexV2EntrySize)
		}
		readers = append(readers, r)
		sources = append(sources, src)
	}

	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak uint64
	var last ID
	merged := 0
	_, err := mergeIndexV2(ctx, readers, func(indexEntry) bool { return true }, perFile, func(ctx context.Context, file []byte) error {
		// Check the order across files without keeping them.
		r, _ := openIndexV2Bytes(t, "index/out", file)
		err := r.iterate(ctx, func(pos int, e indexEntry) error {
			if merged > 0 && bytes.Compare(last[:], e.ID[:]) >= 0 {
				t.Fatalf("merged entry %d out of order", merged)
			}
			last = e.ID
			merged++
			return nil
		})
		if err != nil {
			return err
		}
		runtime.GC()
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapAlloc-min(base, ms.HeapAlloc))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if merged != inputs*perInput {
		t.Fatalf("merged %d entries of %d", merged, inputs*perInput)
	}
	for i, s := range sources {
		if s.maxRead > largestBucket {
			t.Errorf("input %d: a read of %d bytes, the largest bucket is %d", i, s.maxRead, largestBucket)
		}
	}
	all := uint64(inputs * perInput * indexV2EntrySize)
	t.Logf("live heap while merging %d entries (%d MiB of entries): at most %.1f MiB above the inputs", merged, all>>20, float64(peak)/(1<<20))
	if peak > all/6 {
		t.Errorf("the merge held %d bytes at a file boundary; all the entries take %d", peak, all)
	}
}
