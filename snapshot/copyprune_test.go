package snapshot_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

func TestCopyMovesOnlyMissingChunks(t *testing.T) {
	ctx := context.Background()
	src, _ := newRepo(t)
	vm, _ := src.Collection("vm")
	disk := makeDisk(t, t.TempDir(), "d.img", 4<<20, 21)
	first, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}, VMConfig: []byte("cfg")})
	if err != nil {
		t.Fatal(err)
	}
	img1 := readFile(t, disk)
	demodisk.Scatter(disk, 0.02, 5)
	second, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}})
	if err != nil {
		t.Fatal(err)
	}
	img2 := readFile(t, disk)

	// Within the repository: nothing moves.
	archive, _ := src.Collection("archive")
	if _, stats, err := vm.Copy(ctx, first.ID, archive, snapshot.CopyOptions{}); err != nil || stats.Blobs != 0 {
		t.Fatalf("copy within a repository moved %d blobs, %v", stats.Blobs, err)
	}
	restoreAndCompare(t, archive, first.ID, "d", img1)

	// Into another repository: the first copy moves every chunk once, the
	// second only what changed.
	dstRepo, _ := newRepo(t)
	dr, _ := dstRepo.Collection("dr")
	_, s1, err := vm.Copy(ctx, first.ID, dr, snapshot.CopyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, s2, err := vm.Copy(ctx, second.ID, dr, snapshot.CopyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d1, d2 := first.Disks[0], second.Disks[0]
	if s1.Bytes < d1.NewChunkBytes+int64(len("cfg")) {
		t.Errorf("first copy moved %d bytes; the disk's chunks and config are %d", s1.Bytes, d1.NewChunkBytes+3)
	}
	if s2.Blobs == 0 || s2.Bytes >= s1.Bytes/4 {
		t.Errorf("second copy moved %d blobs, %d bytes; the first moved %d bytes", s2.Blobs, s2.Bytes, s1.Bytes)
	}
	// The chunks moved by the second copy are exactly the new ones.
	if dataMoved := s2.Bytes; dataMoved < d2.NewChunkBytes {
		t.Errorf("second copy moved %d bytes, fewer than the %d new chunk bytes", dataMoved, d2.NewChunkBytes)
	}
	restoreAndCompare(t, dr, first.ID, "d", img1)
	restoreAndCompare(t, dr, second.ID, "d", img2)
	if cfg, _ := dr.VMConfig(ctx, mustGet(t, dr, first.ID)); string(cfg) != "cfg" {
		t.Errorf("VM config not copied: %q", cfg)
	}
	// Copying it again succeeds and moves nothing.
	if again, s, err := vm.Copy(ctx, first.ID, dr, snapshot.CopyOptions{}); err != nil || again.ID != first.ID || again.Collection != "dr" || s != (chain.CopyStats{}) {
		t.Errorf("copying the same point twice: %+v, %+v, %v; want the copy, nothing moved", again, s, err)
	}
	// A later create in the target collection builds on the copy.
	demodisk.Scatter(disk, 0.01, 6)
	third, err := dr.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}})
	if err != nil || third.Disks[0].Parent != second.ID {
		t.Fatalf("create after copy: parent %q, %v", third.Disks[0].Parent, err)
	}
}

func mustGet(t *testing.T, c *snapshot.Collection, id string) *snapshot.RestorePoint {
	t.Helper()
	rp, err := c.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return rp
}

func TestCopyInterruptedResumes(t *testing.T) {
	ctx := context.Background()
	src, _ := newRepo(t)
	vm, _ := src.Collection("vm")
	disk := makeDisk(t, t.TempDir(), "d.img", 8<<20, 22)
	rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}})
	if err != nil {
		t.Fatal(err)
	}
	dstRepo, _ := newRepo(t)
	dr, _ := dstRepo.Collection("dr")
	cctx, cancel := context.WithCancel(ctx)
	_, first, err := vm.Copy(cctx, rp.ID, dr, snapshot.CopyOptions{FlushEvery: 256 << 10, Progress: func(s chain.CopyStats) {
		if s.Bytes > rp.Disks[0].NewChunkBytes/2 {
			cancel() // killed halfway
		}
	}})
	cancel()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted copy: %v", err)
	}
	if points, _ := dr.List(ctx); len(points) != 0 {
		t.Fatal("an interrupted copy is visible")
	}
	_, second, err := vm.Copy(ctx, rp.ID, dr, snapshot.CopyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if second.Bytes >= rp.Disks[0].NewChunkBytes || first.Bytes+second.Bytes < rp.Disks[0].NewChunkBytes {
		t.Errorf("interrupted after %d bytes, the rerun moved %d; the disk has %d chunk bytes", first.Bytes, second.Bytes, rp.Disks[0].NewChunkBytes)
	}
	restoreAndCompare(t, dr, rp.ID, "d", readFile(t, disk))
	if vr, err := dstRepo.Verify(ctx, snapshot.VerifyOptions{}); err != nil || !vr.OK() {
		t.Fatal(vr, err)
	}
}

func TestCopyRateLimit(t *testing.T) {
	ctx := context.Background()
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	dr, _ := repo.Collection("dr")
	disk := makeDisk(t, t.TempDir(), "d.img", 1<<20, 1)
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	var ids []string
	for i := range 4 {
		rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}, Now: func() time.Time { return now.Add(time.Duration(i) * time.Second) }})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rp.ID)
	}
	opts := snapshot.CopyOptions{RateLimit: &snapshot.AzureRateLimit, Now: func() time.Time { return now }}
	for _, id := range ids[:3] {
		if _, _, err := vm.Copy(ctx, id, dr, opts); err != nil {
			t.Fatal(err)
		}
	}
	var te *snapshot.ThrottledError
	if _, _, err := vm.Copy(ctx, ids[3], dr, opts); !errors.As(err, &te) || te.RetryAfter != time.Hour || !strings.Contains(err.Error(), "copies") {
		t.Fatalf("fourth copy in the hour: %v", err)
	}
}

func TestPruneKeepsWhatThePolicySays(t *testing.T) {
	ctx := context.Background()
	repo, repoDir := newRepo(t)
	vm, _ := repo.Collection("vm")
	disk := filepath.Join(t.TempDir(), "d.img")
	times := map[string]string{
		"P1": "2026-09-10T10:00:00Z", "P2": "2026-10-05T09:00:00Z", "P3": "2026-10-20T09:00:00Z",
		"P4": "2026-11-20T08:00:00Z", "P5": "2026-11-21T08:00:00Z", "P6": "2026-11-22T08:10:00Z",
		"P7": "2026-11-22T08:50:00Z", "P8": "2026-11-22T09:05:00Z", "P9": "2026-11-22T10:30:00Z",
	}
	idOf := map[string]string{}
	for i := 1; i <= 9; i++ {
		name := fmt.Sprintf("P%d", i)
		at, _ := time.Parse(time.RFC3339, times[name])
		// Each point holds its own data, so deleting it frees space.
		os.WriteFile(disk, bytes.Repeat([]byte(name+" unique data "), 40000), 0o600)
		rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}, Now: func() time.Time { return at }})
		if err != nil {
			t.Fatal(err)
		}
		idOf[name] = rp.ID
	}
	policy := snapshot.RetentionPolicy{Last: 2, Hourly: 3, Daily: 2, Weekly: 2, Monthly: 3, Location: time.UTC}
	names := func(ps []snapshot.PrunedPoint) string {
		var out []string
		for _, p := range ps {
			for n, id := range idOf {
				if id == p.ID {
					out = append(out, n)
				}
			}
		}
		return strings.Join(out, " ")
	}
	dry, err := vm.Prune(ctx, snapshot.PruneOptions{Policy: policy, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if k, d := names(dry.Kept), names(dry.Deleted); k != "P9 P8 P7 P5 P3 P1" || d != "P6 P4 P2" {
		t.Fatalf("dry run keeps %q and deletes %q", k, d)
	}
	if got := strings.Join(dry.Kept[0].Reasons, ","); got != "last,hourly,daily,weekly,monthly" {
		t.Errorf("P9 kept for %q", got)
	}
	if points, _ := vm.List(ctx); len(points) != 9 {
		t.Fatalf("dry run deleted: %d points left", len(points))
	}
	before := packBytes(t, repoDir)
	if _, err := vm.Prune(ctx, snapshot.PruneOptions{Policy: policy}); err != nil {
		t.Fatal(err)
	}
	points, _ := vm.List(ctx)
	if len(points) != 6 {
		t.Fatalf("%d points after prune, want 6", len(points))
	}
	if _, err := repo.GC(ctx, snapshot.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	if after := packBytes(t, repoDir); after >= before {
		t.Errorf("GC after prune: %d -> %d bytes", before, after)
	}
	if _, err := vm.Prune(ctx, snapshot.PruneOptions{Policy: snapshot.RetentionPolicy{}}); err == nil {
		t.Error("an empty policy was accepted")
	}
}
