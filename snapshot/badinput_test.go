package snapshot_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/blockdiff"
	"github.com/diskpoint/diskpoint/snapshot"
)

// Every bad input gets an error that names the thing, and leaves the
// repository verifiable with no restore point added.
func TestCreateRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	dir := t.TempDir()
	good := makeDisk(t, dir, "good.img", 1<<20, 1)
	empty := filepath.Join(dir, "empty.img")
	os.WriteFile(empty, nil, 0o600)
	missing := filepath.Join(dir, "missing.img")

	for _, tc := range []struct {
		name  string
		opts  snapshot.CreateOptions
		want  string
		isErr error
	}{
		{"missing path", snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "os", Path: good}, {Name: "d", Path: missing}}}, missing, os.ErrNotExist},
		{"directory", snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: dir}}}, "is a directory", nil},
		{"zero size", snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: empty}}}, "is empty", nil},
		{"duplicate disk", snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: good}, {Name: "d", Path: good}}}, `"d" named twice`, snapshot.ErrInvalidName},
		{"slash in name", snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "a/b", Path: good}}}, `"a/b"`, snapshot.ErrInvalidName},
		{"dot dot", snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "..", Path: good}}}, `".."`, snapshot.ErrInvalidName},
		{"empty name", snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "", Path: good}}}, "empty", snapshot.ErrInvalidName},
		{"control char", snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "a\x01", Path: good}}}, "not allowed", snapshot.ErrInvalidName},
		{"no disks", snapshot.CreateOptions{}, "no disks", nil},
		{"next bitmap of a file", snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: good, NextBitmap: "diskpoint-1"}}}, "NextBitmap and HeldStill are for an NBD export", nil},
		{"held still file", snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: good, HeldStill: time.Millisecond}}}, "NextBitmap and HeldStill are for an NBD export", nil},
		{"exclude unknown", snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: good}}, Exclude: []string{"x"}}, `"x"`, snapshot.ErrNotFound},
		{"exclude all", snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: good}}, Exclude: []string{"d"}}, "no disks", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := vm.Create(ctx, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if tc.isErr != nil && !errors.Is(err, tc.isErr) {
				t.Errorf("error %v does not wrap %v", err, tc.isErr)
			}
			if points, _ := vm.List(ctx); len(points) != 0 {
				t.Errorf("a failed create left %d restore points", len(points))
			}
			if vr, err := repo.Verify(ctx, snapshot.VerifyOptions{}); err != nil || !vr.OK() {
				t.Errorf("verify after failed create: %+v, %v", vr, err)
			}
		})
	}
}

func TestChangedRangePastTheEnd(t *testing.T) {
	ctx := context.Background()
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	disk := makeDisk(t, t.TempDir(), "d.img", 1<<20, 1)
	if _, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}}); err != nil {
		t.Fatal(err)
	}
	_, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{
		{Name: "d", Path: disk, ChangedOnly: true, Changed: []blockdiff.Range{{Offset: 2 << 20, Length: 10}}}}})
	if err == nil || !strings.Contains(err.Error(), `disk "d"`) || !strings.Contains(err.Error(), "past the disk's end") {
		t.Fatalf("range past the end: %v", err)
	}
	if points, _ := vm.List(ctx); len(points) != 1 {
		t.Errorf("%d restore points after the failed create, want 1", len(points))
	}
}

func TestInvalidCollectionNames(t *testing.T) {
	repo, _ := newRepo(t)
	for _, name := range []string{"", ".", "..", "a/b", `a\b`, "x\x00", "tab\there", strings.Repeat("n", 256)} {
		if _, err := repo.Collection(name); !errors.Is(err, snapshot.ErrInvalidName) {
			t.Errorf("Collection(%q) = %v, want ErrInvalidName", name, err)
		}
	}
}

func TestDiskThatGrowsAndShrinks(t *testing.T) {
	ctx := context.Background()
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	path := makeDisk(t, t.TempDir(), "d.img", 3<<20, 6)
	var ids []string
	var images [][]byte
	for _, size := range []int64{3 << 20, 5<<20 + 777, 5<<20 + 777, 2<<20 - 5, 1} {
		if err := os.Truncate(path, size); err != nil {
			t.Fatal(err)
		}
		f, _ := os.OpenFile(path, os.O_WRONLY, 0)
		f.WriteAt([]byte("z"), size-1)
		f.Close()
		rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: path}}})
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if rp.Disks[0].Size != size {
			t.Errorf("recorded size %d, want %d", rp.Disks[0].Size, size)
		}
		ids = append(ids, rp.ID)
		images = append(images, readFile(t, path))
	}
	for i, id := range ids {
		restoreAndCompare(t, vm, id, "d", images[i])
	}
}

func TestUnknownThingsAreNamed(t *testing.T) {
	ctx := context.Background()
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	disk := makeDisk(t, t.TempDir(), "d.img", 1<<20, 7)
	rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out.img")
	for _, tc := range []struct {
		id, disk, want string
	}{
		{"20000101-000000-abcdef", "d", "20000101-000000-abcdef"},
		{rp.ID, "nope", `"nope"`},
		{"../../etc", "d", "../../etc"},
	} {
		_, err := vm.RestoreDisk(ctx, snapshot.RestoreOptions{Point: tc.id, Disk: tc.disk, Path: out})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("RestoreDisk(%s, %s) = %v, want an error naming %s", tc.id, tc.disk, err, tc.want)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("a failed restore created %s", out)
		}
	}
	if _, err := vm.Get(ctx, "20000101-000000-abcdef"); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("Get unknown: %v, want ErrNotFound", err)
	}
	if err := vm.Delete(ctx, "20000101-000000-abcdef"); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("Delete unknown: %v, want ErrNotFound", err)
	}
	empty, _ := repo.Collection("empty")
	if _, err := empty.Get(ctx, snapshot.Latest); !errors.Is(err, snapshot.ErrNotFound) || !strings.Contains(err.Error(), "empty") {
		t.Errorf("latest of an empty collection: %v", err)
	}
}

func TestRepositoryOpenErrors(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	missing := filepath.Join(dir, "nothing-here")
	if _, err := snapshot.Open(ctx, missing); !errors.Is(err, snapshot.ErrNotFound) || !strings.Contains(err.Error(), missing) {
		t.Errorf("Open missing: %v", err)
	}
	if _, err := snapshot.Open(ctx, dir); !errors.Is(err, snapshot.ErrNotFound) || !strings.Contains(err.Error(), "not a diskpoint repository") {
		t.Errorf("Open empty dir: %v", err)
	}
	repoDir := filepath.Join(dir, "repo")
	if _, err := snapshot.Init(ctx, repoDir, snapshot.InitOptions{Format: testFormat()}); err != nil {
		t.Fatal(err)
	}
	if _, err := snapshot.Init(ctx, repoDir, snapshot.InitOptions{Format: testFormat()}); !errors.Is(err, snapshot.ErrExists) {
		t.Errorf("Init twice: %v, want ErrExists", err)
	}
	for _, bs := range []int{1000, 8 << 10, 32<<20 + 0, 3 << 14} {
		if _, err := snapshot.Init(ctx, filepath.Join(dir, "bs"), snapshot.InitOptions{BlockSize: bs, Format: testFormat()}); err == nil || !strings.Contains(err.Error(), "block size") {
			t.Errorf("Init with block size %d: %v", bs, err)
		}
	}
	cfgPath := filepath.Join(repoDir, "config")
	cfg := readFile(t, cfgPath)
	os.WriteFile(cfgPath, []byte(strings.Replace(string(cfg), fmt.Sprintf(`"version": %d`, max(testFormat(), 1)), `"version": 99`, 1)), 0o600)
	if _, err := snapshot.Open(ctx, repoDir); !errors.Is(err, snapshot.ErrUnsupportedVersion) || !strings.Contains(err.Error(), "99") {
		t.Errorf("Open unknown version: %v", err)
	}
	os.WriteFile(cfgPath, []byte("{garbage"), 0o600)
	if _, err := snapshot.Open(ctx, repoDir); !errors.Is(err, snapshot.ErrCorrupt) || !strings.Contains(err.Error(), "config") {
		t.Errorf("Open garbage config: %v", err)
	}
}
