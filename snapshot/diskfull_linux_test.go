package snapshot_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/internal/systest"
	"github.com/diskpoint/diskpoint/snapshot"
)

// A repository on a small file system that fills up mid-create: the create
// fails with a clear error, the repository stays verifiable and keeps its
// restore points, and once space is freed the next create succeeds and GC
// reclaims what the failed one left.
func TestRepositoryRunsOutOfSpace(t *testing.T) {
	systest.Require(t, "mkfs.ext4")
	ctx := context.Background()
	_, mnt := systest.FileSystem(t, t.TempDir(), "ext4", 40<<20)
	repoDir := filepath.Join(mnt, "repo")
	repo, err := snapshot.Init(ctx, repoDir, snapshot.InitOptions{Format: testFormat()})
	if err != nil {
		t.Fatal(err)
	}
	vm, _ := repo.Collection("vm")
	work := t.TempDir()
	small := filepath.Join(work, "small.img")
	demodisk.Create(small, 4<<20, 1, demodisk.MixedImage)
	first, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: small}}})
	if err != nil {
		t.Fatal(err)
	}
	// Something else takes some of the space the operator can free later.
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, 8<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(work, "big.img")
	demodisk.Create(big, 64<<20, 2, demodisk.Mix{Random: 1}) // incompressible: it cannot fit
	_, err = vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "big", Path: big}}})
	if err == nil {
		t.Fatal("a create larger than the file system succeeded")
	}
	if !strings.Contains(err.Error(), syscall.ENOSPC.Error()) {
		t.Fatalf("create on a full disk: %v, want an error saying %q", err, syscall.ENOSPC)
	}
	t.Logf("the failed create said: %v", err)

	os.Remove(filler) // the operator frees space
	repo, err = snapshot.Open(ctx, repoDir)
	if err != nil {
		t.Fatal(err)
	}
	vm, _ = repo.Collection("vm")
	if report, err := repo.Verify(ctx, snapshot.VerifyOptions{}); err != nil || !report.OK() {
		t.Fatalf("verify after the failed create: %+v, %v", report, err)
	}
	points, _ := vm.List(ctx)
	if len(points) != 1 || points[0].ID != first.ID {
		t.Fatalf("restore points after the failed create: %v", points)
	}
	restoreAndCompare(t, vm, first.ID, "d", readFile(t, small))
	if _, err := repo.GC(ctx, snapshot.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	// Whatever the failed create left (packs that made it, temp files) is gone.
	if report, _ := repo.Verify(ctx, snapshot.VerifyOptions{}); report.UnindexedPacks != 0 {
		t.Errorf("%d unindexed packs after GC", report.UnindexedPacks)
	}
	if temps, _ := filepath.Glob(filepath.Join(repoDir, "packs", "*", ".tmp-*")); len(temps) != 0 {
		t.Errorf("temp files after GC: %v", temps)
	}
	demodisk.Scatter(small, 0.05, 3)
	if _, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: small}}}); err != nil {
		t.Fatalf("create after space was freed: %v", err)
	}
}
