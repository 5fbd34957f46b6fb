package chain

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
)

// newRepositoryOfVersion makes a repository of format version on store,
// with small packs, whatever DISKPOINT_TEST_FORMAT says.
func newRepositoryOfVersion(t *testing.T, store Store, version int) *Repository {
	t.Helper()
	cfg, err := NewConfig(0)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Version, cfg.PackSize = version, 1<<20
	repo, err := Init(context.Background(), store, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return repo
}

// A version 2 repository's writers write index v2 files, at each
// checkpoint as version 1 does, and a fresh open finds every blob through
// them; a version 1 repository's writers still write version 1 files.
func TestWritersWriteTheirVersionsIndexFiles(t *testing.T) {
	checkpointEveryPack(t)
	ctx := context.Background()
	for _, tc := range []struct {
		version int
		magic   string
	}{{FormatVersion, indexMagic}, {FormatVersion2, indexV2Magic}} {
		t.Run(fmt.Sprint("version ", tc.version), func(t *testing.T) {
			store := NewMemStore()
			repo := newRepositoryOfVersion(t, store, tc.version)
			w, err := repo.NewWriter(ctx, "test")
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			rng := rand.New(rand.NewPCG(3, 4))
			var ids []ID
			for range 40 { // 40 incompressible 64 KiB blobs: three 1 MiB packs
				b := make([]byte, 64<<10)
				for i := range b {
					b[i] = byte(rng.Uint32())
				}
				id := Hash(b)
				if _, err := w.PutBlob(ctx, DataBlob, id, b); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
			}
			if err := w.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			infos, err := listObjects(ctx, store, indexPrefix)
			if err != nil {
				t.Fatal(err)
			}
			if len(infos) < 2 {
				t.Fatalf("%d index files after checkpoints at every pack; want several", len(infos))
			}
			for _, info := range infos {
				data, err := store.Get(ctx, info.Name)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.HasPrefix(string(data), tc.magic) {
					t.Errorf("%s begins %q, want %q", info.Name, data[:4], tc.magic)
				}
			}
			opened, err := Open(ctx, store, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := opened.LoadIndex(ctx); err != nil {
				t.Fatal(err)
			}
			for _, id := range ids {
				if _, err := opened.ReadBlob(ctx, DataBlob, id, nil); err != nil {
					t.Fatalf("read after a fresh open: %v", err)
				}
			}
			if _, ok := opened.index().(*indexV2Set); ok != (tc.version == FormatVersion2) {
				t.Errorf("version %d repository opened with a %T", tc.version, opened.index())
			}
		})
	}
}

// A batch larger than one index file holds is split into files of at most
// maxIndexEntries entries, and a blob listed twice is listed once.
func TestWriteIndexV2FilesSplits(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 2^18 entries")
	}
	ctx := context.Background()
	store := NewMemStore()
	rng := rand.New(rand.NewPCG(5, 6))
	var packs []indexedPack
	n := maxIndexEntries + 100
	for p := 0; n > 0; p++ {
		pack := indexedPack{ID: Hash(fmt.Appendf(nil, "pack %d", p))}
		for i := 0; i < 1000 && n > 0; i, n = i+1, n-1 {
			var id ID
			for j := range id {
				id[j] = byte(rng.Uint32())
			}
			pack.Entries = append(pack.Entries, packEntry{ID: id, Type: DataBlob, Offset: uint32(i * 100), Length: 100, RawLength: 100})
		}
		packs = append(packs, pack)
	}
	dup := packs[0].Entries[0]
	packs = append(packs, indexedPack{ID: Hash([]byte("the other copy")), Entries: []packEntry{dup}})
	files, err := writeIndexV2Files(ctx, store, packs)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 {
		t.Fatalf("%d files for %d entries; want 2", len(files), maxIndexEntries+100)
	}
	x := newIndexV2Set()
	if err := x.addWritten(ctx, store, files); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, f := range x.files {
		total += f.count
	}
	if total != maxIndexEntries+100 {
		t.Errorf("the files list %d entries, want %d (the duplicate once)", total, maxIndexEntries+100)
	}
	_, pack, ok, err := x.find(ctx, dup.ID)
	if err != nil || !ok || pack != packs[0].ID {
		t.Errorf("the blob listed twice: pack %s, %v, %v; want the first listing's %s", pack.Short(), ok, err, packs[0].ID.Short())
	}
}

// heapAfterLoad returns the Go heap that the index of the repository in
// dir holds once loaded, checking a sample of blobs is found where want
// says.
func heapAfterLoad(t *testing.T, dir string, want map[ID]indexEntry) uint64 {
	t.Helper()
	ctx := context.Background()
	store, err := NewLocalStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	repo, err := Open(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	for id, e := range want {
		loc, ok := repo.LocateBlob(id)
		if !ok || loc.Pack != packName(e.Pack) || loc.Offset != int64(e.Offset) {
			t.Fatalf("blob %s: located at %+v, %v; want pack %s offset %d", id.Short(), loc, ok, e.Pack.Short(), e.Offset)
		}
	}
	runtime.KeepAlive(repo)
	return after.HeapAlloc - min(after.HeapAlloc, before.HeapAlloc)
}

// The index of a version 2 repository of a million blobs holds a few MB of
// Go heap once loaded (its files' small tables), where version 1's holds
// its every entry: the heap does not grow with the number of chunks.
func TestVersion2IndexHeapIsSmall(t *testing.T) {
	n := 1 << 20
	if testing.Short() {
		n = 1 << 18
	}
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(7, 8))
	entries := make([]indexEntry, n)
	var packs []indexedPack
	for i := range entries {
		if i%1000 == 0 {
			packs = append(packs, indexedPack{ID: Hash(fmt.Appendf(nil, "pack %d", i))})
		}
		e := &entries[i]
		for j := range e.ID {
			e.ID[j] = byte(rng.Uint32())
		}
		e.Pack, e.Type, e.Offset, e.Length, e.RawLength = packs[len(packs)-1].ID, DataBlob, uint32(i%1000)*64, 64, 64
		packs[len(packs)-1].Entries = append(packs[len(packs)-1].Entries, e.packEntry)
	}
	sample := map[ID]indexEntry{}
	for range 200 {
		e := entries[rng.IntN(n)]
		sample[e.ID] = e
	}

	heap := map[int]uint64{}
	for _, version := range []int{FormatVersion, FormatVersion2} {
		dir := t.TempDir()
		store, err := NewLocalStore(dir)
		if err != nil {
			t.Fatal(err)
		}
		repo := newRepositoryOfVersion(t, store, version)
		// The index only: its packs need not exist for a load.
		if _, err := repo.writeIndexFiles(ctx, packs); err != nil {
			t.Fatal(err)
		}
		store.Close()
		heap[version] = heapAfterLoad(t, dir, sample)
		t.Logf("version %d: %d blobs, %.1f MiB of Go heap after LoadIndex (%.1f bytes a blob)", version, n, float64(heap[version])/(1<<20), float64(heap[version])/float64(n))
	}
	if perBlob := float64(heap[FormatVersion2]) / float64(n); perBlob > 4 {
		t.Errorf("version 2 holds %.1f bytes of heap a blob after LoadIndex; want its tables only (about 1.5)", perBlob)
	}
	if heap[FormatVersion2]*10 > heap[FormatVersion] {
		t.Errorf("version 2 holds %d bytes, version 1 %d: want a tenth at most", heap[FormatVersion2], heap[FormatVersion])
	}
}
