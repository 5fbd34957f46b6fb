package snapshot_test

import (
	"context"
	"testing"

	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

// GC and Verify do what their snapshot-level options say: a dry run with
// progress removes nothing and reports its phases; a structure-only
// verify reads no chunk data, a subset of 100% reads it all.
func TestGCAndVerifyOptions(t *testing.T) {
	ctx := context.Background()
	repo, repoDir := newRepo(t)
	vm, _ := repo.Collection("vm")
	disk := makeDisk(t, t.TempDir(), "d.img", 1<<20, 1)
	first, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := demodisk.Create(disk, 1<<20, 2, demodisk.MixedImage); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}}); err != nil {
		t.Fatal(err)
	}
	if err := vm.Delete(ctx, first.ID); err != nil {
		t.Fatal(err)
	}

	before := packBytes(t, repoDir)
	phases := map[string]bool{}
	report, err := repo.GC(ctx, snapshot.GCOptions{DryRun: true, Progress: func(p snapshot.GCProgress) { phases[p.Phase] = true }})
	if err != nil {
		t.Fatal(err)
	}
	if !report.DryRun || report.BytesReclaimed() <= 0 || packBytes(t, repoDir) != before {
		t.Errorf("dry run: %+v, pack bytes %d -> %d", report, before, packBytes(t, repoDir))
	}
	if !phases["mark"] {
		t.Errorf("GC progress phases %v, want mark among them", phases)
	}

	var progressed int64
	structure, err := repo.Verify(ctx, snapshot.VerifyOptions{StructureOnly: true})
	if err != nil || !structure.OK() || structure.BytesRead != 0 || structure.PacksNotRead == 0 {
		t.Errorf("structure only: %+v, %v", structure, err)
	}
	all, err := snapshot.ParseDataSubset("100%")
	if err != nil {
		t.Fatal(err)
	}
	full, err := repo.Verify(ctx, snapshot.VerifyOptions{ReadData: &all, Progress: func(done, total int64) { progressed = done }})
	if err != nil || !full.OK() || full.PacksNotRead != 0 || full.BytesRead == 0 || progressed != full.BytesRead {
		t.Errorf("100%% subset: %+v, %v; progress said %d bytes", full, err, progressed)
	}
}
