package snapshot_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

const testBlockSize = 16 << 10

// testFormat is the format version of the repositories the tests make:
// DISKPOINT_TEST_FORMAT=2 runs them against version 2; unset, version 1.
func testFormat() int {
	v, _ := strconv.Atoi(os.Getenv("DISKPOINT_TEST_FORMAT"))
	return v
}

func newRepo(t *testing.T) (*snapshot.Repository, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	repo, err := snapshot.Init(context.Background(), dir, snapshot.InitOptions{BlockSize: testBlockSize, Format: testFormat()})
	if err != nil {
		t.Fatal(err)
	}
	return repo, dir
}

func makeDisk(t *testing.T, dir, name string, size int64, seed uint64) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := demodisk.Create(path, size, seed, demodisk.MixedImage); err != nil {
		t.Fatal(err)
	}
	return path
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func restoreAndCompare(t *testing.T, c *snapshot.Collection, id, disk string, want []byte) {
	t.Helper()
	out := filepath.Join(t.TempDir(), disk+".restored")
	stats, err := c.RestoreDisk(context.Background(), snapshot.RestoreOptions{Point: id, Disk: disk, Path: out})
	if err != nil {
		t.Fatalf("restore %s disk %s: %v", id, disk, err)
	}
	got := readFile(t, out)
	if !bytes.Equal(got, want) {
		t.Fatalf("restore %s disk %s: %d bytes differ from the original's %d", id, disk, len(got), len(want))
	}
	if stats.WrittenBytes+stats.ZeroBytes != int64(len(want)) {
		t.Errorf("restore stats %+v do not add up to %d", stats, len(want))
	}
}

func packBytes(t *testing.T, dir string) (n int64) {
	t.Helper()
	filepath.Walk(filepath.Join(dir, "packs"), func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

func TestChainOfRestorePointsRestoresBitExact(t *testing.T) {
	ctx := context.Background()
	repo, repoDir := newRepo(t)
	vm, _ := repo.Collection("vm1")
	dir := t.TempDir()
	osDisk := makeDisk(t, dir, "os.img", 6<<20+12345, 1) // not a multiple of the block size
	dataDisk := makeDisk(t, dir, "data.img", 8<<20, 2)

	type state struct {
		id       string
		os, data []byte
	}
	var states []state
	for i := range 6 {
		if i > 0 {
			if _, err := demodisk.Scatter(osDisk, 0.02, uint64(10+i)); err != nil {
				t.Fatal(err)
			}
			if _, err := demodisk.Scatter(dataDisk, 0.05, uint64(20+i)); err != nil {
				t.Fatal(err)
			}
		}
		rp, err := vm.Create(ctx, snapshot.CreateOptions{
			Disks:    []snapshot.DiskSource{{Name: "os", Path: osDisk}, {Name: "data", Path: dataDisk}},
			VMConfig: []byte(`{"cpus":2,"point":` + string(rune('0'+i)) + `}`),
		})
		if err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
		if i > 0 {
			for _, d := range rp.Disks {
				if d.Parent != states[i-1].id {
					t.Errorf("point %d disk %s: parent %q, want %q", i, d.Name, d.Parent, states[i-1].id)
				}
				if d.ChangedBytes == 0 || d.StoredBytes == 0 || d.ChangedBytes >= d.Size/2 {
					t.Errorf("point %d disk %s: changed %d, stored %d of %d", i, d.Name, d.ChangedBytes, d.StoredBytes, d.Size)
				}
			}
		}
		states = append(states, state{rp.ID, readFile(t, osDisk), readFile(t, dataDisk)})
	}
	points, err := vm.List(ctx)
	if err != nil || len(points) != 6 {
		t.Fatalf("List: %d points, %v", len(points), err)
	}
	for i, s := range states {
		if points[i].ID != s.id {
			t.Fatalf("List order: %s at %d, want %s", points[i].ID, i, s.id)
		}
		restoreAndCompare(t, vm, s.id, "os", s.os)
		restoreAndCompare(t, vm, s.id, "data", s.data)
	}
	cfg, err := vm.VMConfig(ctx, points[3])
	if err != nil || string(cfg) != `{"cpus":2,"point":3}` {
		t.Errorf("VM config of point 3: %q, %v", cfg, err)
	}
	latest, err := vm.Get(ctx, snapshot.Latest)
	if err != nil || latest.ID != states[5].id {
		t.Errorf("Get(latest) = %v, %v; want %s", latest, err, states[5].id)
	}

	// Delete a middle point; GC reclaims its space and the rest still restore.
	before := packBytes(t, repoDir)
	if err := vm.Delete(ctx, states[2].id); err != nil {
		t.Fatal(err)
	}
	report, err := repo.GC(ctx, snapshot.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	after := packBytes(t, repoDir)
	if after >= before || report.BytesReclaimed() <= 0 {
		t.Fatalf("GC after delete: %d -> %d bytes; report %+v", before, after, report)
	}
	t.Logf("GC reclaimed %d of %d pack bytes (%+v)", before-after, before, report)
	for i, s := range states {
		if i == 2 {
			if _, err := vm.Get(ctx, s.id); err == nil {
				t.Errorf("deleted point %s still there", s.id)
			}
			continue
		}
		restoreAndCompare(t, vm, s.id, "os", s.os)
		restoreAndCompare(t, vm, s.id, "data", s.data)
	}
	vr, err := repo.Verify(ctx, snapshot.VerifyOptions{})
	if err != nil || !vr.OK() {
		t.Fatalf("verify: %+v, %v", vr, err)
	}
}

func TestUnchangedDiskStoresNothing(t *testing.T) {
	ctx := context.Background()
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	disk := makeDisk(t, t.TempDir(), "d.img", 4<<20, 3)
	src := []snapshot.DiskSource{{Name: "d", Path: disk}}
	first, err := vm.Create(ctx, snapshot.CreateOptions{Disks: src})
	if err != nil {
		t.Fatal(err)
	}
	second, err := vm.Create(ctx, snapshot.CreateOptions{Disks: src})
	if err != nil {
		t.Fatal(err)
	}
	d := second.Disks[0]
	if d.StoredBytes != 0 || d.ChangedBytes != 0 || d.Root != first.Disks[0].Root {
		t.Fatalf("unchanged disk: stored %d, changed %d, same root %v", d.StoredBytes, d.ChangedBytes, d.Root == first.Disks[0].Root)
	}
}

func TestIdenticalBlocksAcrossDisksStoredOnce(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a := makeDisk(t, dir, "a.img", 4<<20, 4)
	b := filepath.Join(dir, "b.img")
	os.WriteFile(b, readFile(t, a), 0o600)

	one, oneDir := newRepo(t)
	vm, _ := one.Collection("vm")
	if _, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "a", Path: a}}}); err != nil {
		t.Fatal(err)
	}
	two, twoDir := newRepo(t)
	vm2, _ := two.Collection("vm")
	rp, err := vm2.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "a", Path: a}, {Name: "b", Path: b}}})
	if err != nil {
		t.Fatal(err)
	}
	single, double := packBytes(t, oneDir), packBytes(t, twoDir)
	if double > single+single/50 {
		t.Fatalf("two identical disks take %d bytes, one takes %d", double, single)
	}
	if sum := rp.Disks[0].StoredBytes + rp.Disks[1].StoredBytes; sum > single {
		t.Errorf("disks report %d stored bytes together, more than one disk's %d", sum, single)
	}
}

// A changed-range list that covers the writes gives the very same block map
// (same root) as hashing every block.
func TestChangedRangesMatchFullScan(t *testing.T) {
	ctx := context.Background()
	repo, _ := newRepo(t)
	dir := t.TempDir()
	disk := makeDisk(t, dir, "d.img", 16<<20, 5)
	full, _ := repo.Collection("full")
	ranged, _ := repo.Collection("ranged")
	for _, c := range []*snapshot.Collection{full, ranged} {
		if _, err := c.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}}); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 3 {
		changes, err := demodisk.Scatter(disk, 0.01, uint64(50+round))
		if err != nil {
			t.Fatal(err)
		}
		a, err := full.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}})
		if err != nil {
			t.Fatal(err)
		}
		var progressed int64
		b, err := ranged.Create(ctx, snapshot.CreateOptions{
			Disks:    []snapshot.DiskSource{{Name: "d", Path: disk, ChangedOnly: true, Changed: changes}},
			Progress: func(p snapshot.Progress) { progressed = p.Scan.Read },
		})
		if err != nil {
			t.Fatal(err)
		}
		if a.Disks[0].Root != b.Disks[0].Root || a.Disks[0].ChangedBytes != b.Disks[0].ChangedBytes {
			t.Fatalf("round %d: range scan root %s changed %d; full scan root %s changed %d", round,
				b.Disks[0].Root.Short(), b.Disks[0].ChangedBytes, a.Disks[0].Root.Short(), a.Disks[0].ChangedBytes)
		}
		if progressed == 0 || progressed > 4*a.Disks[0].ChangedBytes {
			t.Errorf("round %d: range scan read %d bytes for %d changed", round, progressed, a.Disks[0].ChangedBytes)
		}
		restoreAndCompare(t, ranged, b.ID, "d", readFile(t, disk))
	}
}

func TestRestoreLeavesHoles(t *testing.T) {
	ctx := context.Background()
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	path := filepath.Join(t.TempDir(), "sparse.img")
	f, _ := os.Create(path)
	f.Truncate(64 << 20)
	f.WriteAt(bytes.Repeat([]byte("data"), 1000), 32<<20)
	f.Close()
	rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: path}}})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out.img")
	if _, err := vm.RestoreDisk(ctx, snapshot.RestoreOptions{Point: rp.ID, Disk: "d", Path: out}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, out), readFile(t, path)) {
		t.Fatal("restored image differs")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(out, &st); err != nil {
		t.Fatal(err)
	}
	if allocated := st.Blocks * 512; allocated > 1<<20 {
		t.Errorf("restored 64 MiB image with 4 KB of data allocates %d bytes: holes were not kept", allocated)
	}
}

func writeFile(path string, data []byte) error { return os.WriteFile(path, data, 0o600) }
