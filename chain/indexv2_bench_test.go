package chain

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// readCounter counts a rangeReader's reads, cheaply enough for a benchmark.
type readCounter struct {
	rangeReader
	reads *atomic.Int64
}

func (c readCounter) ReadAt(ctx context.Context, p []byte, off int64) error {
	c.reads.Add(1)
	return c.rangeReader.ReadAt(ctx, p, off)
}

// BenchmarkIndexV2Lookup looks blobs up in 1M entries held in 4 index files
// of maxIndexEntries on local disk (as a local cache would hold them),
// asking each file in turn until one has the blob: hits are blobs the
// files list, misses random IDs (a create's new blocks). It reports the Go
// heap the open readers hold, and bucket reads per lookup.
func BenchmarkIndexV2Lookup(b *testing.B) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(31, 32))
	const files = 4
	dir := b.TempDir()
	var hits []ID
	var paths []string
	for f := range files {
		entries := randomIndexEntries(rng, maxIndexEntries, randomIDs(rng, 1024))
		for i := 0; i < len(entries); i += 16 {
			hits = append(hits, entries[i].ID)
		}
		data, err := encodeIndexV2(entries, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		path := filepath.Join(dir, "index"+strconv.Itoa(f))
		if err := os.WriteFile(path, data, 0o600); err != nil {
			b.Fatal(err)
		}
		paths = append(paths, path)
	}
	rng.Shuffle(len(hits), func(i, j int) { hits[i], hits[j] = hits[j], hits[i] })
	misses := randomIDs(rng, len(hits))

	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	var reads atomic.Int64
	readers := make([]*indexV2Reader, files)
	for i, path := range paths {
		file, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		defer file.Close()
		info, err := file.Stat()
		if err != nil {
			b.Fatal(err)
		}
		src := readCounter{readerAtRange{file}, &reads}
		if readers[i], err = openIndexV2(ctx, path, src, info.Size()); err != nil {
			b.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	held := float64(ms.HeapAlloc - min(before, ms.HeapAlloc))
	entries := float64(files * maxIndexEntries)

	lookup := func(b *testing.B, ids []ID, wantFound bool) {
		reads.Store(0)
		n := 0
		start := time.Now()
		for b.Loop() {
			id := ids[n%len(ids)]
			n++
			found := false
			for _, r := range readers {
				_, _, ok, err := r.lookup(ctx, id)
				if err != nil {
					b.Fatal(err)
				}
				if ok {
					found = true
					break
				}
			}
			if found != wantFound {
				b.Fatalf("blob %s: found %v", id.Short(), found)
			}
		}
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "lookups/s")
		b.ReportMetric(float64(reads.Load())/float64(n), "reads/op")
		b.ReportMetric(held/(1<<20), "heap-MiB")
		b.ReportMetric(held/entries, "heap-B/entry")
	}
	b.Run("hit", func(b *testing.B) { lookup(b, hits, true) })
	b.Run("miss", func(b *testing.B) { lookup(b, misses, false) })
	runtime.KeepAlive(readers)
}

// BenchmarkIndexV2Merge merges 4 full files (1M entries, held in memory)
// into new full files, keeping three quarters of the packs: the work of a
// compaction or of GC's index rewrite, per entry read.
func BenchmarkIndexV2Merge(b *testing.B) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(33, 34))
	packs := randomIDs(rng, 4096)
	gone := map[ID]bool{}
	for _, p := range packs[:1024] {
		gone[p] = true
	}
	var inputs []*indexV2Reader
	for range 4 {
		data, err := encodeIndexV2(randomIndexEntries(rng, maxIndexEntries, packs), time.Now())
		if err != nil {
			b.Fatal(err)
		}
		r, err := openIndexV2(ctx, "index/in", readerAtRange{bytes.NewReader(data)}, int64(len(data)))
		if err != nil {
			b.Fatal(err)
		}
		inputs = append(inputs, r)
	}
	keep := func(e indexEntry) bool { return !gone[e.Pack] }
	read := 0
	start := time.Now()
	for b.Loop() {
		stats, err := mergeIndexV2(ctx, inputs, keep, 0, func(context.Context, []byte) error { return nil })
		if err != nil {
			b.Fatal(err)
		}
		read += stats.Read
	}
	b.ReportMetric(float64(read)/time.Since(start).Seconds(), "entries/s")
}
