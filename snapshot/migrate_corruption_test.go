package snapshot_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/snapshot"
)

// migratedFixture is the version 1 fixture, copied and migrated.
type migratedFixture struct {
	repo  *snapshot.Repository
	dir   string
	disks []fixtureDisk
}

func newMigratedFixture(t *testing.T) *migratedFixture {
	t.Helper()
	dir := copyV1Fixture(t)
	repo, err := snapshot.Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Migrate(context.Background(), snapshot.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	return &migratedFixture{repo: repo, dir: dir, disks: v1FixtureDisks(t)}
}

// manifest returns the disk manifest of d.
func (f *migratedFixture) manifest(t *testing.T, d fixtureDisk) chain.DiskManifest {
	t.Helper()
	m, err := f.repo.Chain().LoadManifest(context.Background(), d.Collection, d.Point)
	if err != nil {
		t.Fatal(err)
	}
	for _, dm := range m.Disks {
		if dm.Name == d.Disk {
			return dm
		}
	}
	t.Fatalf("%s/%s has no disk %s", d.Collection, d.Point, d.Disk)
	return chain.DiskManifest{}
}

// chunks returns the chunk IDs of d's block map.
func (f *migratedFixture) chunks(t *testing.T, d fixtureDisk) []chain.ID {
	t.Helper()
	tr := f.repo.Chain().OpenTree(f.manifest(t, d))
	var ids []chain.ID
	for j := int64(0); j < tr.Geometry().Leaves(); j++ {
		var err error
		if ids, err = tr.Leaf(context.Background(), j, ids); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// uniqueChunk returns a chunk of d that no other disk of any point has.
func (f *migratedFixture) uniqueChunk(t *testing.T, d fixtureDisk) chain.ID {
	t.Helper()
	others := map[chain.ID]bool{}
	for _, o := range f.disks {
		if o != d {
			for _, id := range f.chunks(t, o) {
				others[id] = true
			}
		}
	}
	for _, id := range f.chunks(t, d) {
		if !id.IsZero() && !others[id] {
			return id
		}
	}
	t.Fatalf("no chunk unique to %+v", d)
	return chain.ID{}
}

// blobFile returns the pack file that holds blob id, and where in it.
func (f *migratedFixture) blobFile(t *testing.T, id chain.ID) (string, chain.BlobLocation) {
	t.Helper()
	loc, ok := f.repo.Chain().LocateBlob(id)
	if !ok {
		t.Fatalf("blob %s is not in the migrated index", id.Short())
	}
	return filepath.Join(f.dir, loc.Pack), loc
}

// flipByte flips one byte of a file.
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x5a
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// The corruption table of TestCorruptionIsFoundAndContained, on a
// repository converted by Migrate: each kind of damage is named by
// verify with the restore points it hurts, those points' damaged disks
// fail to restore with the error that says what happened, every other
// point restores bit-exact before and after a GC, and damage to the index
// alone costs nothing: after GC the repository verifies clean.
func TestMigratedRepositoryCorruptionIsFoundAndContained(t *testing.T) {
	ctx := context.Background()
	newest := v1FixtureDisks(t)
	target := newest[len(newest)-1] // a disk of the newest point
	for _, tc := range []struct {
		name       string
		damage     func(t *testing.T, f *migratedFixture) string // returns what verify must name
		hurt       bool                                          // target's point is hurt
		restoreErr error
	}{
		{"a chunk in a pack", func(t *testing.T, f *migratedFixture) string {
			id := f.uniqueChunk(t, target)
			path, loc := f.blobFile(t, id)
			flipByte(t, path, loc.Offset+loc.Length/2)
			return id.String()
		}, true, chain.ErrCorrupt},
		{"a block-map node", func(t *testing.T, f *migratedFixture) string {
			root := f.manifest(t, target).Root
			path, loc := f.blobFile(t, root)
			flipByte(t, path, loc.Offset+loc.Length-1)
			return root.String()
		}, true, chain.ErrCorrupt},
		{"a deleted pack", func(t *testing.T, f *migratedFixture) string {
			path, _ := f.blobFile(t, f.uniqueChunk(t, target))
			os.Remove(path)
			return filepath.Base(path)
		}, true, chain.ErrNotFound},
		{"a damaged manifest", func(t *testing.T, f *migratedFixture) string {
			flipByte(t, filepath.Join(f.dir, "manifests", target.Collection, target.Point), 10)
			return "manifests/" + target.Collection + "/" + target.Point
		}, true, chain.ErrCorrupt},
		{"a damaged version 2 index file", func(t *testing.T, f *migratedFixture) string {
			names := fixtureIndexFiles(t, f.dir)
			flipByte(t, names[0], 100)
			return "index/" + filepath.Base(names[0])
		}, false, nil},
		{"a deleted version 2 index file", func(t *testing.T, f *migratedFixture) string {
			os.Remove(fixtureIndexFiles(t, f.dir)[0])
			return ""
		}, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newMigratedFixture(t)
			named := tc.damage(t, f)
			f.repo.Close()
			repo, err := snapshot.Open(ctx, f.dir) // as the next process would
			if err != nil {
				t.Fatal(err)
			}
			defer repo.Close()
			if v := repo.Config().Version; v != chain.FormatVersion2 {
				t.Fatalf("version %d", v)
			}
			report, err := repo.Verify(ctx, snapshot.VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			hurt := map[string]bool{}
			found := named == ""
			for _, d := range report.Damage {
				found = found || strings.Contains(d.Object, named)
				for _, p := range d.RestorePoints {
					hurt[p] = true
				}
			}
			if !found {
				t.Fatalf("verify did not name %s: %+v", named, report.Damage)
			}
			if tc.hurt != hurt[target.Collection+"/"+target.Point] || len(hurt) > 1 {
				t.Fatalf("verify says the damage hurts %v; want only %s/%s: %v", hurt, target.Collection, target.Point, tc.hurt)
			}
			if tc.hurt {
				c, _ := repo.Collection(target.Collection)
				out := filepath.Join(t.TempDir(), "hurt.img")
				_, err := c.RestoreDisk(ctx, snapshot.RestoreOptions{Point: target.Point, Disk: target.Disk, Path: out})
				if !errors.Is(err, tc.restoreErr) {
					t.Errorf("restore of the damaged disk: %v, want %v", err, tc.restoreErr)
				}
			}
			var whole []fixtureDisk
			for _, d := range f.disks {
				if !hurt[d.Collection+"/"+d.Point] {
					whole = append(whole, d)
				}
			}
			checkRestoresDisks(t, repo, whole, "beside the damage")
			// GC never makes it worse; with a block map or a manifest
			// damaged it refuses, naming it.
			if _, err := repo.GC(ctx, snapshot.GCOptions{}); err != nil {
				if tc.name != "a block-map node" && tc.name != "a damaged manifest" || !errors.Is(err, chain.ErrCorrupt) || !strings.Contains(err.Error(), named) {
					t.Fatalf("gc: %v", err)
				}
			}
			checkRestoresDisks(t, repo, whole, "after GC")
			if !tc.hurt {
				if vr, err := repo.Verify(ctx, snapshot.VerifyOptions{}); err != nil || !vr.OK() || vr.UnindexedPacks != 0 {
					t.Errorf("after GC: %+v, %v", vr, err)
				}
			}
		})
	}
}
