package snapshot_test

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

// tieredFixture is a local tier with restore points of two collections
// and an empty vault.
type tieredFixture struct {
	local, vault *snapshot.Repository
	vaultDir     string
	points       []*snapshot.RestorePoint // of vm, oldest first
	images       map[string][]byte        // point ID -> disk d's bytes
}

// newTieredFixture takes n restore points of collection vm, with changes
// between them, and one of collection db, in a new local tier.
func newTieredFixture(t *testing.T, n int) *tieredFixture {
	t.Helper()
	ctx := context.Background()
	local, _ := newRepo(t)
	vault, vaultDir := newRepo(t)
	f := &tieredFixture{local: local, vault: vault, vaultDir: vaultDir, images: map[string][]byte{}}
	work := t.TempDir()
	disk := makeDisk(t, work, "d.img", 1<<20, 41)
	vm, _ := local.Collection("vm")
	for i := range n {
		if i > 0 {
			demodisk.Scatter(disk, 0.05, uint64(42+i))
		}
		rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}})
		if err != nil {
			t.Fatal(err)
		}
		f.points = append(f.points, rp)
		f.images[rp.ID] = readFile(t, disk)
	}
	db, _ := local.Collection("db")
	if _, err := db.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: makeDisk(t, work, "e.img", 1<<20, 49)}}}); err != nil {
		t.Fatal(err)
	}
	return f
}

// ids lists the restore point IDs of collection name in repo, oldest first.
func ids(t *testing.T, repo *snapshot.Repository, name string) []string {
	t.Helper()
	c, _ := repo.Collection(name)
	points, err := c.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, rp := range points {
		out = append(out, rp.ID)
	}
	return out
}

// A transfer copies every point the vault lacks, of every collection,
// prunes the local tier to the newest KeepLocal of each, and a pruned
// point restores from the vault; run again, it moves nothing.
func TestTransferCopiesWhatTheVaultLacksThenPrunesTheLocalTier(t *testing.T) {
	ctx := context.Background()
	f := newTieredFixture(t, 4)
	var calls int
	result, err := snapshot.Transfer(ctx, f.local, f.vault, snapshot.TransferOptions{PruneLocal: true, KeepLocal: 1,
		Progress: func(p snapshot.TransferProgress) {
			if p.Points == 0 || p.Index < 1 || p.Index > p.Points || p.Copy.Covered > p.DiskBytes {
				t.Errorf("progress %+v", p)
			}
			calls++
		}})
	if err != nil {
		t.Fatal(err)
	}
	if len(result.Transferred) != 5 || result.AlreadyInVault != 0 || calls == 0 {
		t.Fatalf("transferred %d points (%d present), %d progress calls; want 5, 0, some", len(result.Transferred), result.AlreadyInVault, calls)
	}
	if len(result.Pruned) != 3 || !result.GCDue || result.GC != nil {
		t.Fatalf("pruned %v, gc due %v, gc %v; want the 3 older vm points, due, none run", result.Pruned, result.GCDue, result.GC)
	}
	newest := f.points[len(f.points)-1].ID
	if got := ids(t, f.local, "vm"); !slices.Equal(got, []string{newest}) {
		t.Fatalf("the local tier keeps %v, want only the newest, %s", got, newest)
	}
	if got := ids(t, f.local, "db"); len(got) != 1 {
		t.Fatalf("the local tier keeps %d db points, want its one", len(got))
	}
	if got := ids(t, f.vault, "vm"); len(got) != 4 {
		t.Fatalf("the vault has %d vm points, want 4", len(got))
	}
	vaultVM, _ := f.vault.Collection("vm")
	restoreAndCompare(t, vaultVM, f.points[0].ID, "d", f.images[f.points[0].ID])

	again, err := snapshot.Transfer(ctx, f.local, f.vault, snapshot.TransferOptions{PruneLocal: true, KeepLocal: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Transferred) != 0 || again.AlreadyInVault != 2 || len(again.Pruned) != 0 || again.GCDue {
		t.Fatalf("a second transfer: %+v; want nothing moved, 2 present, nothing pruned", again)
	}
	if report, err := f.vault.Verify(ctx, snapshot.VerifyOptions{}); err != nil || len(report.Damage) != 0 {
		t.Fatalf("verify the vault: %v %v", report.Damage, err)
	}

	// The same repository, opened twice, is refused: every point would be
	// "in the vault", and the prune would delete the only copy.
	twice, err := snapshot.OpenStore(ctx, f.local.Chain().Store(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snapshot.Transfer(ctx, f.local, twice, snapshot.TransferOptions{PruneLocal: true}); err == nil || len(ids(t, f.local, "vm")) != 1 {
		t.Fatalf("a transfer into the local tier itself: %v, the local tier keeps %v", err, ids(t, f.local, "vm"))
	}
}

// The prune asks the vault itself, after the copies, and keeps every local
// point the vault lacks: here the vault's copy of the oldest point is
// deleted while the transfer runs, and that point stays local.
func TestTransferNeverPrunesAPointTheVaultLacks(t *testing.T) {
	ctx := context.Background()
	f := newTieredFixture(t, 3)
	oldest := f.points[0].ID
	vaultVM, _ := f.vault.Collection("vm")
	deleted := false
	result, err := snapshot.Transfer(ctx, f.local, f.vault, snapshot.TransferOptions{Collection: "vm", PruneLocal: true, KeepLocal: 0, GC: &snapshot.GCOptions{},
		Progress: func(p snapshot.TransferProgress) {
			if p.Index == p.Points && !deleted { // copying the last point: the oldest is in the vault
				if err := vaultVM.Delete(ctx, oldest); err != nil {
					t.Error(err)
				}
				deleted = true
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(t, f.local, "vm"); !slices.Equal(got, []string{oldest}) {
		t.Fatalf("the local tier keeps %v, want only %s, which the vault lacks", got, oldest)
	}
	if len(result.KeptNotInVault) != 1 || result.KeptNotInVault[0].ID != oldest || len(result.Pruned) != 2 {
		t.Fatalf("pruned %v, kept for the vault lacks them %v", result.Pruned, result.KeptNotInVault)
	}
	if result.GC == nil || result.GCDue {
		t.Fatalf("GC was asked for and did not run: %+v", result)
	}
	if got := ids(t, f.local, "db"); len(got) != 1 {
		t.Fatalf("a transfer of vm touched db: %v", got)
	}
	restoreAndCompare(t, vaultVM, f.points[2].ID, "d", f.images[f.points[2].ID])
	localVM, _ := f.local.Collection("vm")
	restoreAndCompare(t, localVM, oldest, "d", f.images[oldest]) // and GC kept what it needs
}

// A chunk damaged in the local tier fails the transfer with ErrCorrupt:
// the damaged chunk is not stored in the vault, the point it belongs to is
// not in the vault, and nothing is pruned.
func TestTransferNeverStoresADamagedChunk(t *testing.T) {
	ctx := context.Background()
	f := newCorruptionFixture(t)
	path, loc := f.blobFile(t, f.uniqueA)
	flipAt(t, path, loc.Offset+loc.Length/2)
	vault, _ := newRepo(t)
	_, err := snapshot.Transfer(ctx, f.repo, vault, snapshot.TransferOptions{PruneLocal: true})
	if !errors.Is(err, chain.ErrCorrupt) {
		t.Fatalf("transfer of a damaged chunk: %v, want ErrCorrupt", err)
	}
	if vault.Chain().HasBlob(f.uniqueA) {
		t.Fatal("the vault holds the damaged chunk")
	}
	if got := ids(t, vault, "vm"); slices.Contains(got, f.points["A"].ID) {
		t.Fatalf("the vault lists point A, whose chunk is damaged: %v", got)
	}
	if got := ids(t, f.repo, "vm"); len(got) != 2 {
		t.Fatalf("a failed transfer pruned the local tier: %v", got)
	}
	if report, err := vault.Verify(ctx, snapshot.VerifyOptions{}); err != nil || len(report.Damage) != 0 {
		t.Fatalf("verify the vault: %v %v", report.Damage, err)
	}
}

// A transfer cancelled halfway keeps what it flushed; run again it moves
// only the rest, and the two runs move no more than one transfer does but
// for what was not yet flushed at the cancel: up to FlushEvery's worth
// and the blobs in flight, and on format 2, which flushes a leaf's chunks
// together, that leaf's chunks.
func TestTransferInterruptedResumes(t *testing.T) {
	ctx := context.Background()
	local, _ := newRepo(t)
	vault, _ := newRepo(t)
	disk := makeDisk(t, t.TempDir(), "d.img", 12<<20, 51) // three leaves of the block map
	vm, _ := local.Collection("vm")
	rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}})
	if err != nil {
		t.Fatal(err)
	}
	whole, _ := newRepo(t)
	full, err := snapshot.Transfer(ctx, local, whole, snapshot.TransferOptions{})
	if err != nil || len(full.Transferred) != 1 {
		t.Fatal(full, err)
	}
	fullBlobs := full.Transferred[0].Blobs

	cctx, cancel := context.WithCancel(ctx)
	var moved int64
	const flushEvery = 256 << 10
	_, err = snapshot.Transfer(cctx, local, vault, snapshot.TransferOptions{FlushEvery: flushEvery,
		Progress: func(p snapshot.TransferProgress) {
			moved = p.Copy.Blobs
			if moved >= fullBlobs/2 {
				cancel()
			}
		}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("the cancelled transfer: %v", err)
	}
	rest, err := snapshot.Transfer(ctx, local, vault, snapshot.TransferOptions{})
	if err != nil || len(rest.Transferred) != 1 {
		t.Fatal(rest, err)
	}
	restBlobs := rest.Transferred[0].Blobs
	unflushed := int64(runtime.GOMAXPROCS(0)) + 1 + flushEvery/testBlockSize
	if vault.Config().Version >= chain.FormatVersion2 {
		unflushed += int64(local.Config().TreeFanout)
	}
	if restBlobs >= fullBlobs || moved+restBlobs > fullBlobs+unflushed {
		t.Fatalf("the cancelled run moved %d blobs and the rerun %d; one whole transfer moves %d", moved, restBlobs, fullBlobs)
	}
	vaultVM, _ := vault.Collection("vm")
	restoreAndCompare(t, vaultVM, rp.ID, "d", readFile(t, disk))
	if report, err := vault.Verify(ctx, snapshot.VerifyOptions{}); err != nil || len(report.Damage) != 0 {
		t.Fatalf("verify the vault: %v %v", report.Damage, err)
	}
	t.Logf("cancelled after %d blobs; the rerun moved %d of %d", moved, restBlobs, fullBlobs)
}
