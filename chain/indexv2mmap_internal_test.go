package chain

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/chain/internal/mmapfile"
)

// writeTestIndexFiles writes index files listing n random blobs to store
// (the packs need not exist for lookups) and returns the entries.
func writeTestIndexFiles(t *testing.T, store Store, n int, seed uint64) []indexEntry {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed+1))
	var packs []indexedPack
	entries := make([]indexEntry, n)
	for i := range entries {
		if i%4096 == 0 {
			packs = append(packs, indexedPack{ID: Hash(fmt.Appendf(nil, "pack %d %d", seed, i))})
		}
		e := &entries[i]
		e.ID = randomID(rng)
		e.Pack, e.Type, e.Offset, e.Length, e.RawLength = packs[len(packs)-1].ID, DataBlob, uint32(i%4096)*64, 64, 64
		packs[len(packs)-1].Entries = append(packs[len(packs)-1].Entries, e.packEntry)
	}
	if _, err := writeIndexV2Files(context.Background(), store, packs); err != nil {
		t.Fatal(err)
	}
	return entries
}

// The filters of index files in a LocalStore are mapped, not copied into
// the Go heap, lookups through them answer as before, and the mappings
// are given back once the index is dropped.
func TestIndexV2FiltersOfLocalFilesAreMapped(t *testing.T) {
	ctx := context.Background()
	store, err := NewLocalStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	n := 2 * maxIndexEntries
	entries := writeTestIndexFiles(t, store, n, 3)
	mapsBefore := mmapfile.Live()

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	x, err := loadIndexV2Set(ctx, store, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)

	filters := 0
	for _, f := range x.files {
		filters += len(f.filter.Fingerprints)
		if !f.mapped {
			t.Errorf("%s: filter read into the heap, not mapped", f.name)
		}
	}
	if got := mmapfile.Live() - mapsBefore; got != int64(len(x.files)) {
		t.Errorf("%d mappings for %d index files", got, len(x.files))
	}
	t.Logf("%d blobs in %d files: %d bytes of filters, the loaded index holds %d bytes of Go heap", n, len(x.files), filters, heap)
	if heap > int64(filters)/2 {
		t.Errorf("the loaded index holds %d bytes of Go heap, its filters are %d bytes: they were copied into it", heap, filters)
	}

	rng := rand.New(rand.NewPCG(5, 6))
	for range 2000 {
		want := entries[rng.IntN(n)]
		e, pack, ok, err := x.find(ctx, want.ID)
		if err != nil || !ok || pack != want.Pack || e != want.packEntry {
			t.Fatalf("blob %s: %+v in %s, %v, %v; want %+v in %s", want.ID.Short(), e, pack.Short(), ok, err, want.packEntry, want.Pack.Short())
		}
		missing := randomID(rng)
		if _, _, ok, err := x.find(ctx, missing); ok || err != nil {
			t.Fatalf("blob %s never written: found %v, %v", missing.Short(), ok, err)
		}
	}

	runtime.KeepAlive(x)
	x = nil
	for i := 0; mmapfile.Live() != mapsBefore; i++ {
		if i == 100 {
			t.Fatalf("%d mappings still live after the index was dropped and 100 collections", mmapfile.Live()-mapsBefore)
		}
		runtime.GC()
		runtime.Gosched()
	}
}

// A mapped index file truncated under the reader (diskpoint never does it;
// someone else may) makes its lookups fail, not the process crash.
func TestIndexV2MappedFileTruncatedIsAnError(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	store, err := NewLocalStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	entries := writeTestIndexFiles(t, store, 10_000, 9)
	x, err := loadIndexV2Set(ctx, store, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if len(x.files) != 1 || !x.files[0].mapped {
		t.Fatalf("want one mapped index file, have %d", len(x.files))
	}
	path := filepath.Join(dir, filepath.FromSlash(x.files[0].name))
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	_, _, ok, err := x.find(ctx, entries[0].ID)
	if err == nil || ok || !strings.Contains(err.Error(), x.files[0].name) {
		t.Fatalf("lookup in a truncated mapped file: found %v, error %v; want an error naming the file", ok, err)
	}
	t.Log(err)
	if _, err := lookupBatchIn(ctx, x.files, sortIDs([]ID{entries[0].ID, entries[1].ID}), func(ID, int, int, indexEntry) error { return nil }); err == nil {
		t.Error("a batched lookup in a truncated mapped file: no error")
	}
	if err := x.files[0].iterate(ctx, func(int, indexEntry) error { return nil }); err == nil {
		t.Error("iterating a truncated mapped file: no error")
	}
}
