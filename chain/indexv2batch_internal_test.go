package chain

import (
	"bytes"
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// bucketReads records which buckets of a file the reads of its entries
// covered, and how often.
type bucketReads struct {
	rangeReader
	r     *indexV2Reader // set once open
	mu    sync.Mutex
	reads int
	times map[int]int // bucket → reads that covered it
}

func (b *bucketReads) ReadAt(ctx context.Context, p []byte, off int64) error {
	if b.r != nil {
		b.mu.Lock()
		b.reads++
		first := int((off - b.r.layout.entries) / indexV2EntrySize)
		last := first + len(p)/indexV2EntrySize // exclusive
		for k := range b.r.fanout {
			if b.times == nil {
				break // counting reads only
			}
			if lo, hi := b.r.bucketRange(k); lo < last && hi > first && hi > lo {
				b.times[k]++
			}
		}
		b.mu.Unlock()
	}
	return b.rangeReader.ReadAt(ctx, p, off)
}

// A sorted batch of lookups reads each bucket at most once, in fewer reads
// than a lookup per ID, and finds exactly what lookups one by one find.
func TestIndexV2LookupSortedReadsEachBucketOnce(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(5, 6))
	entries := randomIndexEntries(rng, 40_000, randomIDs(rng, 50))
	data := mustEncodeIndexV2(t, entries, time.Unix(1700000000, 0))
	src := &bucketReads{rangeReader: readerAtRange{bytes.NewReader(data)}, times: map[int]int{}}
	r, err := openIndexV2(ctx, "index/test", src, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	src.r = r
	// Every other entry, and as many IDs the file does not list.
	var ids []ID
	for i := 0; i < len(entries); i += 2 {
		ids = append(ids, entries[i].ID)
	}
	ids = append(ids, randomIDs(rng, len(ids))...)
	ids = sortIDs(ids)
	got := map[ID]int{}
	err = r.lookupSorted(ctx, ids, func(i int, e indexEntry, pos int) error {
		if e.ID != ids[i] {
			t.Fatalf("asked for %s, given %s", ids[i].Short(), e.ID.Short())
		}
		got[e.ID] = pos
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for k, n := range src.times {
		if n > 1 {
			t.Fatalf("bucket %d read %d times", k, n)
		}
	}
	batchReads := src.reads
	if batchReads >= len(r.fanout) {
		t.Errorf("%d reads for %d buckets; want fewer than one a bucket", batchReads, len(r.fanout))
	}
	src.reads, src.times = 0, nil
	for _, id := range ids {
		e, pos, ok, err := r.lookup(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if gotPos, found := got[id]; ok != found || ok && (gotPos != pos || e.ID != id) {
			t.Fatalf("%s: lookup says %v at %d, the batch %v at %d", id.Short(), ok, pos, found, gotPos)
		}
	}
	if len(got) != len(entries)/2 {
		t.Errorf("the batch found %d, want %d", len(got), len(entries)/2)
	}
	t.Logf("%d IDs: %d reads batched, %d one by one, %d buckets", len(ids), batchReads, src.reads, len(r.fanout))
}
