package snapshot_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

// corruptionFixture is a repository with points A and B of one disk in
// collection vm (B after scattered changes) and point C of another disk in
// collection other.
type corruptionFixture struct {
	repo    *snapshot.Repository
	dir     string
	points  map[string]*snapshot.RestorePoint // A, B, C
	images  map[string][]byte
	imageA  string // a file holding A's disk, for repairs
	uniqueA chain.ID
}

func newCorruptionFixture(t *testing.T) *corruptionFixture {
	t.Helper()
	ctx := context.Background()
	repo, dir := newRepo(t)
	f := &corruptionFixture{repo: repo, dir: dir, points: map[string]*snapshot.RestorePoint{}, images: map[string][]byte{}}
	vm, _ := repo.Collection("vm")
	other, _ := repo.Collection("other")
	work := t.TempDir()
	disk := makeDisk(t, work, "d.img", 2<<20, 31)
	f.imageA = filepath.Join(work, "a-copy.img")
	for _, step := range []struct {
		name string
		c    *snapshot.Collection
		path string
	}{{"A", vm, disk}, {"B", vm, disk}, {"C", other, makeDisk(t, work, "e.img", 1<<20, 32)}} {
		if step.name == "A" {
			copyFile(t, disk, f.imageA)
		}
		if step.name == "B" {
			demodisk.Scatter(disk, 0.1, 33)
		}
		rp, err := step.c.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: step.path}}})
		if err != nil {
			t.Fatal(err)
		}
		f.points[step.name] = rp
		f.images[step.name] = readFile(t, step.path)
	}
	// A chunk only A uses: in A's map, not in B's.
	inB := map[chain.ID]bool{}
	for _, id := range f.blockIDs(t, "B") {
		inB[id] = true
	}
	for _, id := range f.blockIDs(t, "A") {
		if !id.IsZero() && !inB[id] {
			f.uniqueA = id
			break
		}
	}
	if f.uniqueA.IsZero() {
		t.Fatal("no chunk unique to A")
	}
	return f
}

func (f *corruptionFixture) blockIDs(t *testing.T, point string) []chain.ID {
	t.Helper()
	rp := f.points[point]
	m, err := f.repo.Chain().LoadManifest(context.Background(), rp.Collection, rp.ID)
	if err != nil {
		t.Fatal(err)
	}
	tr := f.repo.Chain().OpenTree(m.Disks[0])
	var ids []chain.ID
	for j := int64(0); j < tr.Geometry().Leaves(); j++ {
		if ids, err = tr.Leaf(context.Background(), j, ids); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

func (f *corruptionFixture) collection(point string) *snapshot.Collection {
	name := "vm"
	if point == "C" {
		name = "other"
	}
	c, _ := f.repo.Collection(name)
	return c
}

// flipAt flips one byte of a stored object.
func flipAt(t *testing.T, path string, off int64) {
	t.Helper()
	b := readFile(t, path)
	b[off] ^= 0x5a
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func (f *corruptionFixture) blobFile(t *testing.T, id chain.ID) (string, chain.BlobLocation) {
	t.Helper()
	loc, ok := f.repo.Chain().LocateBlob(id)
	if !ok {
		t.Fatalf("blob %s not in the index", id.Short())
	}
	return filepath.Join(f.dir, loc.Pack), loc
}

func TestCorruptionIsFoundAndContained(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, f *corruptionFixture) string // returns text the report must name
		hits   []string                                        // restore points that must fail
		// restoreErr is what a failed restore's error wraps: ErrCorrupt
		// when bytes were read and are wrong, ErrNotFound when the store
		// lacks a pack (an I/O failure, which a reader whose index is out
		// of date can retry; verify still reports it as damage).
		restoreErr error
	}{
		{"a chunk in a pack", func(t *testing.T, f *corruptionFixture) string {
			path, loc := f.blobFile(t, f.uniqueA)
			flipAt(t, path, loc.Offset+loc.Length/2)
			return f.uniqueA.String()
		}, []string{"A"}, chain.ErrCorrupt},
		{"a block-map node", func(t *testing.T, f *corruptionFixture) string {
			root := f.points["B"].Disks[0].Root
			path, loc := f.blobFile(t, root)
			flipAt(t, path, loc.Offset+loc.Length-1)
			return root.String()
		}, []string{"B"}, chain.ErrCorrupt},
		{"a truncated pack", func(t *testing.T, f *corruptionFixture) string {
			path, _ := f.blobFile(t, f.uniqueA)
			os.Truncate(path, 100)
			return filepath.Base(path)
		}, []string{"A"}, chain.ErrCorrupt},
		{"a deleted pack", func(t *testing.T, f *corruptionFixture) string {
			path, _ := f.blobFile(t, f.uniqueA)
			os.Remove(path)
			return filepath.Base(path)
		}, []string{"A"}, chain.ErrNotFound},
		{"a damaged manifest", func(t *testing.T, f *corruptionFixture) string {
			path := filepath.Join(f.dir, "manifests", "vm", f.points["B"].ID)
			flipAt(t, path, 10)
			return "manifests/vm/" + f.points["B"].ID
		}, []string{"B"}, chain.ErrCorrupt},
		{"a damaged index file", func(t *testing.T, f *corruptionFixture) string {
			names, _ := filepath.Glob(filepath.Join(f.dir, "index", "*"))
			flipAt(t, names[0], 5)
			return "index/" + filepath.Base(names[0])
		}, nil, nil},
		{"a deleted index file", func(t *testing.T, f *corruptionFixture) string {
			names, _ := filepath.Glob(filepath.Join(f.dir, "index", "*"))
			os.Remove(names[0])
			return ""
		}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newCorruptionFixture(t)
			named := tc.damage(t, f)
			repo, err := snapshot.Open(ctx, f.dir) // as the next process would
			if err != nil {
				t.Fatal(err)
			}
			f.repo = repo
			report, err := repo.Verify(ctx, snapshot.VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			affected := map[string]bool{}
			var found bool
			for _, d := range report.Damage {
				if named != "" && strings.Contains(d.Object, named) {
					found = true
				}
				for _, p := range d.RestorePoints {
					for name, rp := range f.points {
						if strings.HasSuffix(p, "/"+rp.ID) {
							affected[name] = true
						}
					}
				}
			}
			if named != "" && !found {
				t.Fatalf("verify did not name %s: %+v", named, report.Damage)
			}
			for _, name := range tc.hits {
				if !affected[name] {
					t.Errorf("verify does not say that restore point %s is affected: %+v", name, report.Damage)
				}
			}
			for name, rp := range f.points {
				out := filepath.Join(t.TempDir(), name+".img")
				_, err := f.collection(name).RestoreDisk(ctx, snapshot.RestoreOptions{Point: rp.ID, Disk: "d", Path: out})
				if affected[name] {
					if !errors.Is(err, tc.restoreErr) || (named != "" && !strings.Contains(err.Error(), named) && !strings.Contains(err.Error(), "blob")) {
						t.Errorf("restore of affected point %s: %v, want %v naming the damage", name, err, tc.restoreErr)
					}
					if tc.restoreErr != chain.ErrCorrupt && (errors.Is(err, chain.ErrCorrupt) || !strings.Contains(err.Error(), named)) {
						t.Errorf("restore of affected point %s: %v: want the missing pack %s named, and not ErrCorrupt (no bytes were read)", name, err, named)
					}
					if _, serr := os.Stat(out); !os.IsNotExist(serr) {
						t.Errorf("a failed restore of %s left a file", name)
					}
					continue
				}
				if err != nil {
					t.Errorf("restore point %s does not need the damaged object, but: %v", name, err)
				} else if got := readFile(t, out); string(got) != string(f.images[name]) {
					t.Errorf("restore point %s restored wrong data", name)
				}
			}
			// GC never makes it worse: what restored before still does. With
			// a block-map node or a manifest damaged it cannot know what lies
			// below, so it refuses, naming the object, and removes nothing.
			if _, err := repo.GC(ctx, snapshot.GCOptions{}); err != nil {
				if tc.name != "a block-map node" && tc.name != "a damaged manifest" || !errors.Is(err, chain.ErrCorrupt) || !strings.Contains(err.Error(), named) {
					t.Fatalf("gc: %v", err)
				}
			}
			for name, rp := range f.points {
				if affected[name] {
					continue
				}
				restoreAndCompare(t, f.collection(name), rp.ID, "d", f.images[name])
			}
			if len(tc.hits) == 0 { // index damage: GC rewrote the index, all is well again
				if vr, err := repo.Verify(ctx, snapshot.VerifyOptions{}); err != nil || !vr.OK() || vr.UnindexedPacks != 0 {
					t.Errorf("after GC: %+v, %v", vr, err)
				}
			}
		})
	}
}

// A damaged chunk is healed from a disk that still holds its bytes.
func TestRepairFromDisk(t *testing.T) {
	ctx := context.Background()
	f := newCorruptionFixture(t)
	path, loc := f.blobFile(t, f.uniqueA)
	flipAt(t, path, loc.Offset+1)
	repo, _ := snapshot.Open(ctx, f.dir)
	report, err := repo.Verify(ctx, snapshot.VerifyOptions{})
	if err != nil || report.OK() {
		t.Fatalf("verify: %+v, %v", report, err)
	}
	// The current disk no longer holds A's bytes; the copy of A's image does.
	fixed, err := repo.RepairFromDisks(ctx, report, []string{f.imageA})
	if err != nil || fixed.Repaired == 0 || fixed.Found != fixed.Wanted {
		t.Fatalf("repair: %+v, %v", fixed, err)
	}
	if vr, err := repo.Verify(ctx, snapshot.VerifyOptions{}); err != nil || !vr.OK() {
		t.Fatalf("verify after repair: %+v, %v", vr, err)
	}
	vm, _ := repo.Collection("vm")
	restoreAndCompare(t, vm, f.points["A"].ID, "d", f.images["A"])
	if _, err := repo.GC(ctx, snapshot.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	restoreAndCompare(t, vm, f.points["A"].ID, "d", f.images["A"])
}

func TestDamagedConfigIsNamed(t *testing.T) {
	_, dir := newRepo(t)
	flipAt(t, filepath.Join(dir, "config"), 3)
	if _, err := snapshot.Open(context.Background(), dir); !errors.Is(err, chain.ErrCorrupt) || !strings.Contains(err.Error(), "config") {
		t.Fatalf("open with a damaged config: %v", err)
	}
}
