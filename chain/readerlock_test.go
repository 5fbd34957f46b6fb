package chain_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
)

// overlapping returns n runs of blocks where run i shares half its blocks
// with run i+1, so that deleting one point leaves packs half dead.
func overlapping(seed uint64, n, half int) ([][]chain.ID, map[chain.ID][]byte) {
	rng := rand.New(rand.NewPCG(seed, seed))
	halves := make([][]chain.ID, n+1)
	data := map[chain.ID][]byte{}
	for i := range halves {
		ids, d := randomBlocks(rng, half, 0)
		halves[i] = ids
		for k, v := range d {
			data[k] = v
		}
	}
	runs := make([][]chain.ID, n)
	for i := range runs {
		runs[i] = append(append([]chain.ID(nil), halves[i]...), halves[i+1]...)
	}
	return runs, data
}

func packNames(t *testing.T, store chain.Store) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	store.List(context.Background(), "packs/", func(i chain.ObjectInfo) error {
		names[i.Name] = true
		return nil
	})
	return names
}

func roots(m *chain.Manifest) []chain.ID {
	ids := []chain.ID{m.Config}
	for _, d := range m.Disks {
		ids = append(ids, d.Root)
	}
	return ids
}

func countObjects(t *testing.T, store chain.Store, prefix string) int {
	t.Helper()
	n := 0
	store.List(context.Background(), prefix, func(chain.ObjectInfo) error { n++; return nil })
	return n
}

// A process whose index is older than a GC that another process ran while
// no reader lock was visible finds packs gone: it reloads the index and
// reads on. A moved pack is not damage.
func TestReaderWithAnOlderIndexReadsOn(t *testing.T) {
	ctx := context.Background()
	store := chain.NewMemStore()
	repo := newRepoOn(t, store)
	runs, data := overlapping(21, 2, 100)
	commit(t, repo, "p1", runs[0], data)
	p2 := commit(t, repo, "p2", runs[1], data)
	older, err := chain.Open(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	olderToo, err := chain.Open(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*chain.Repository{older, olderToo} {
		if err := r.LoadIndex(ctx); err != nil { // the index as it is now
			t.Fatal(err)
		}
	}
	shared := runs[1][0]
	was, _ := older.LocateBlob(shared)
	if err := repo.DeleteManifest(ctx, "vm", "p1"); err != nil {
		t.Fatal(err)
	}
	if report, err := repo.GC(ctx, chain.GCOptions{RepackUnused: 0.01}); err != nil || report.PacksRepacked == 0 {
		t.Fatalf("GC: %+v, %v; want packs repacked", report, err)
	}
	if _, err := store.Stat(ctx, was.Pack); !errors.Is(err, chain.ErrNotFound) {
		t.Fatalf("the pack the older index names for blob %s is still there (%v): nothing to test", shared.Short(), err)
	}
	if err := readAll(t, older, p2); err != nil {
		t.Fatalf("reading through an index older than a GC: %v", err)
	}
	n := 0
	err = olderToo.ReadBlobs(ctx, chain.DataBlob, runs[1], nil, func(i int, b []byte) error {
		if chain.Hash(b) != runs[1][i] {
			t.Errorf("blob %d: wrong bytes", i)
		}
		n++
		return nil
	})
	if err != nil || n != len(runs[1]) {
		t.Fatalf("ReadBlobs through an index older than a GC: %d of %d, %v", n, len(runs[1]), err)
	}
}

// GC marks the roots of live readers and leaves in place the packs it drops
// while readers may read them through the index they loaded; a later GC
// deletes them once the readers closed, or loaded their index again.
func TestGCDefersDeletingWhatReadersMayRead(t *testing.T) {
	defer chain.SetGarbageClockSkew(0)()
	ctx := context.Background()
	store := chain.NewMemStore()
	repo := newRepoOn(t, store)
	runs, data := overlapping(22, 4, 100)
	var points []*chain.Manifest
	for i, run := range runs {
		points = append(points, commit(t, repo, "p"+string(rune('1'+i)), run, data))
	}
	reader, err := chain.Open(ctx, store, nil) // another process
	if err != nil {
		t.Fatal(err)
	}
	lock, err := reader.OpenReader(ctx, "restore", roots(points[1]))
	if err != nil {
		t.Fatal(err)
	}
	before := packNames(t, store)
	for _, id := range []string{"p1", "p2"} { // p2 is being read
		if err := repo.DeleteManifest(ctx, "vm", id); err != nil {
			t.Fatal(err)
		}
	}
	report, err := repo.GC(ctx, chain.GCOptions{RepackUnused: 0.01})
	if err != nil {
		t.Fatal(err)
	}
	if report.PacksDeferred == 0 || countObjects(t, store, "garbage/") != 1 {
		t.Fatalf("GC beside a reader: %+v, %d garbage records; want packs deferred and one record", report, countObjects(t, store, "garbage/"))
	}
	for name := range before {
		if !packNames(t, store)[name] {
			t.Fatalf("pack %s was deleted while a reader may read it", name)
		}
	}
	// Deferred packs are GC's, not leftovers of a failed create.
	if vr, err := repo.Verify(ctx, chain.VerifyOptions{}); err != nil || !vr.OK() || vr.UnindexedPacks != 0 {
		t.Fatalf("verify beside deferred packs: %+v, %v; want clean, with no unindexed packs", vr, err)
	}
	if err := readAll(t, reader, points[1]); err != nil {
		t.Fatalf("reader of a point deleted while it reads: %v", err)
	}
	if again, err := repo.GC(ctx, chain.GCOptions{RepackUnused: 0.01}); err != nil || again.GarbagePacksDeleted != 0 {
		t.Fatalf("GC while the reader still reads through its old index: %+v, %v; want nothing reaped", again, err)
	}
	// Once the reader has loaded its index again, the packs dropped before
	// are no longer held back, though the reader still reads: what it reads
	// was kept because GC marked its roots.
	if err := lock.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	after, err := repo.GC(ctx, chain.GCOptions{RepackUnused: 0.01})
	if err != nil || after.GarbagePacksDeleted != report.PacksDeferred || countObjects(t, store, "garbage/") != 0 {
		t.Fatalf("GC after the reader refreshed its index: %+v, %v; want the %d deferred packs deleted", after, err, report.PacksDeferred)
	}
	if err := readAll(t, reader, points[1]); err != nil {
		t.Fatalf("reader of a point deleted while it reads, after GCs: %v", err)
	}
	if err := lock.Close(); err != nil {
		t.Fatal(err)
	}
	if after, err = repo.GC(ctx, chain.GCOptions{RepackUnused: 0.01}); err != nil || after.BlobsRemoved == 0 || after.PacksDeferred != 0 {
		t.Fatalf("GC once the reader closed: %+v, %v; want the deleted point's blobs gone at once", after, err)
	}

	// Packs deferred for a reader are deleted by the first GC after it closes.
	lock, err = reader.OpenReader(ctx, "export", roots(points[3]))
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.DeleteManifest(ctx, "vm", "p3"); err != nil {
		t.Fatal(err)
	}
	if report, err = repo.GC(ctx, chain.GCOptions{RepackUnused: 0.01}); err != nil || report.PacksDeferred == 0 {
		t.Fatalf("GC beside a reader: %+v, %v; want packs deferred", report, err)
	}
	if err := readAll(t, reader, points[3]); err != nil {
		t.Fatalf("reader after the GC: %v", err)
	}
	lock.Close()
	if after, err = repo.GC(ctx, chain.GCOptions{RepackUnused: 0.01}); err != nil || after.GarbagePacksDeleted != report.PacksDeferred || countObjects(t, store, "garbage/") != 0 {
		t.Fatalf("GC after the reader closed: %+v, %v; want the %d deferred packs deleted", after, err, report.PacksDeferred)
	}
	if vr, err := repo.Verify(ctx, chain.VerifyOptions{}); err != nil || !vr.OK() || vr.UnindexedPacks != 0 {
		t.Fatalf("verify: %+v, %v", vr, err)
	}
}

// A pack left in place for a reader is unindexed, so a process that loads
// the index recovers its entries from its header, and a create there may
// deduplicate against them. GC then keeps what that create needs: it never
// deletes a deferred pack that serves a live blob.
func TestGCKeepsADeferredPackACreateDeduplicatedAgainst(t *testing.T) {
	ctx := context.Background()
	store := chain.NewMemStore()
	repo := newRepoOn(t, store)
	rng := rand.New(rand.NewPCG(23, 23))
	alone, data := randomBlocks(rng, 50, 0)
	read, readData := randomBlocks(rng, 50, 0)
	for k, v := range readData {
		data[k] = v
	}
	commit(t, repo, "p1", alone, data) // in packs of its own
	p2 := commit(t, repo, "p2", read, data)
	lock, err := repo.OpenReader(ctx, "export", roots(p2))
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.DeleteManifest(ctx, "vm", "p1"); err != nil {
		t.Fatal(err)
	}
	if report, err := repo.GC(ctx, chain.GCOptions{RepackUnused: 1}); err != nil || report.PacksDeferred == 0 {
		t.Fatalf("GC beside a reader: %+v, %v; want p1's packs deferred", report, err)
	}
	// Another process loads the index, recovering the deferred packs, and
	// stores p1's disk again: every blob is there already.
	other, err := chain.Open(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	again := commit(t, other, "p3", alone, data)
	if err := lock.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.GC(ctx, chain.GCOptions{RepackUnused: 1}); err != nil {
		t.Fatal(err)
	}
	fresh, err := chain.Open(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := readAll(t, fresh, again); err != nil {
		t.Fatalf("restore point that deduplicated against a deferred pack, after GC: %v", err)
	}
	if vr, err := fresh.Verify(ctx, chain.VerifyOptions{}); err != nil || !vr.OK() {
		t.Fatalf("verify: %+v, %v", vr, err)
	}
}
