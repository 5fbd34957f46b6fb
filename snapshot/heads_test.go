package snapshot_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/snapshot"
)

// headsFixture is a collection "vm" of points p0 {a, b}, p1 {a, b},
// p2 {a}: the next create of a and b has parents p2 (a) and p1 (b).
type headsFixture struct {
	store      *manifestReads
	repo       *snapshot.Repository
	vm         *snapshot.Collection
	a, b       string
	clock      time.Time
	p0, p1, p2 *snapshot.RestorePoint
}

func newHeadsFixture(t *testing.T) *headsFixture {
	t.Helper()
	ctx := context.Background()
	f := &headsFixture{store: &manifestReads{Store: chain.NewMemStore()}}
	var err error
	f.repo, err = snapshot.InitStore(ctx, f.store, snapshot.InitOptions{BlockSize: testBlockSize, Format: testFormat()})
	if err != nil {
		t.Fatal(err)
	}
	f.vm, _ = f.repo.Collection("vm")
	dir := t.TempDir()
	f.a, f.b = makeDisk(t, dir, "a.img", 128<<10, 1), makeDisk(t, dir, "b.img", 128<<10, 2)
	f.clock = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	f.p0 = f.create(t, f.vm)
	f.p1 = f.create(t, f.vm)
	f.p2 = f.create(t, f.vm, "b")
	return f
}

// create takes a point of disks a and b, less exclude, in c, a second
// after the one before.
func (f *headsFixture) create(t *testing.T, c *snapshot.Collection, exclude ...string) *snapshot.RestorePoint {
	t.Helper()
	f.clock = f.clock.Add(time.Second)
	at := f.clock
	rp, err := c.Create(context.Background(), snapshot.CreateOptions{
		Disks:   []snapshot.DiskSource{{Name: "a", Path: f.a}, {Name: "b", Path: f.b}},
		Exclude: exclude,
		Now:     func() time.Time { return at },
	})
	if err != nil {
		t.Fatal(err)
	}
	return rp
}

// checkParents creates a point of a and b and checks its disks' parents.
func (f *headsFixture) checkParents(t *testing.T, a, b *snapshot.RestorePoint) *snapshot.RestorePoint {
	t.Helper()
	rp := f.create(t, f.vm)
	got := map[string]string{}
	for _, d := range rp.Disks {
		got[d.Name] = d.Parent
	}
	if got["a"] != a.ID || got["b"] != b.ID {
		t.Errorf("parents a=%s b=%s; want a=%s b=%s", got["a"], got["b"], a.ID, b.ID)
	}
	return rp
}

// checkCheap creates a point of a and b after rp, and checks that it read
// one manifest (its parent), not the collection: the record is sound.
func (f *headsFixture) checkCheap(t *testing.T, rp *snapshot.RestorePoint, when string) *snapshot.RestorePoint {
	t.Helper()
	f.store.n.Store(0)
	next := f.checkParents(t, rp, rp)
	if n := f.store.n.Load(); n > 1 {
		t.Errorf("%s: the next create read %d manifests, want 1 (the heads record rebuilt)", when, n)
	}
	return next
}

// A create finds its disks' parents from the heads record: a few reads,
// however many points the collection has, even when they share their
// second (which defeats reading the newest manifests first). Without the
// record this create reads every manifest.
func TestCreateFindsParentsWithoutReadingEveryManifest(t *testing.T) {
	ctx := context.Background()
	store := &manifestReads{Store: chain.NewMemStore()}
	repo, err := snapshot.InitStore(ctx, store, snapshot.InitOptions{BlockSize: testBlockSize, Format: testFormat()})
	if err != nil {
		t.Fatal(err)
	}
	vm, _ := repo.Collection("vm")
	disk := makeDisk(t, t.TempDir(), "a.img", 64<<10, 1)
	base := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	var last *snapshot.RestorePoint
	const points = 25
	for i := range points + 1 {
		at := base.Add(time.Duration(i) * 10 * time.Millisecond) // all in one second
		if i == points {
			store.n.Store(0)
		}
		rp, err := vm.Create(ctx, snapshot.CreateOptions{
			Disks: []snapshot.DiskSource{{Name: "a", Path: disk}},
			Now:   func() time.Time { return at },
		})
		if err != nil {
			t.Fatal(err)
		}
		if last != nil && rp.Disks[0].Parent != last.ID {
			t.Fatalf("point %d's parent is %s, want the point before, %s", i, rp.Disks[0].Parent, last.ID)
		}
		last = rp
	}
	if n := store.n.Load(); n > 2 {
		t.Errorf("a create after %d points of one second read %d manifests; want 1 (its parent)", points, n)
	}
}

// A heads record that is missing, damaged or stale is never trusted: the
// parents are the newest points all the same, and the record is rebuilt,
// so that the create after reads one manifest again.
func TestHeadsRecordMissingDamagedOrStale(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		// change does something to f and returns the parents of a and b
		// that the next create must have.
		change func(t *testing.T, f *headsFixture) (a, b *snapshot.RestorePoint)
	}{
		{"sound", func(t *testing.T, f *headsFixture) (a, b *snapshot.RestorePoint) {
			return f.p2, f.p1
		}},
		{"missing", func(t *testing.T, f *headsFixture) (a, b *snapshot.RestorePoint) {
			if err := f.store.Delete(ctx, "heads/vm"); err != nil {
				t.Fatal(err)
			}
			return f.p2, f.p1
		}},
		{"damaged", func(t *testing.T, f *headsFixture) (a, b *snapshot.RestorePoint) {
			if err := f.store.Put(ctx, "heads/vm", []byte(`{"version":1,"collection":"vm","points":3,`)); err != nil {
				t.Fatal(err)
			}
			return f.p2, f.p1
		}},
		{"of another version", func(t *testing.T, f *headsFixture) (a, b *snapshot.RestorePoint) {
			data, err := f.store.Get(ctx, "heads/vm")
			if err != nil {
				t.Fatal(err)
			}
			if err := f.store.Put(ctx, "heads/vm", []byte(strings.Replace(string(data), `"version":1`, `"version":9`, 1))); err != nil {
				t.Fatal(err)
			}
			return f.p2, f.p1
		}},
		{"a head deleted", func(t *testing.T, f *headsFixture) (a, b *snapshot.RestorePoint) {
			if err := f.vm.Delete(ctx, f.p2.ID); err != nil {
				t.Fatal(err)
			}
			return f.p1, f.p1
		}},
		{"a point before the heads deleted", func(t *testing.T, f *headsFixture) (a, b *snapshot.RestorePoint) {
			// The record stays sound: the create reads the parents alone.
			if err := f.vm.Delete(ctx, f.p0.ID); err != nil {
				t.Fatal(err)
			}
			return f.p2, f.p1
		}},
		{"a head deleted behind its back", func(t *testing.T, f *headsFixture) (a, b *snapshot.RestorePoint) {
			// As an older build deletes: the manifest alone.
			if err := f.store.Delete(ctx, "manifests/vm/"+f.p2.ID); err != nil {
				t.Fatal(err)
			}
			return f.p1, f.p1
		}},
		{"a point before the heads deleted behind its back", func(t *testing.T, f *headsFixture) (a, b *snapshot.RestorePoint) {
			if err := f.store.Delete(ctx, "manifests/vm/"+f.p0.ID); err != nil {
				t.Fatal(err)
			}
			return f.p2, f.p1
		}},
		{"a point saved behind its back", func(t *testing.T, f *headsFixture) (a, b *snapshot.RestorePoint) {
			// An older build, or a writer that lost the race to update
			// the record: the record stays as it was before the point.
			before, err := f.store.Get(ctx, "heads/vm")
			if err != nil {
				t.Fatal(err)
			}
			p3 := f.create(t, f.vm, "b")
			if err := f.store.Put(ctx, "heads/vm", before); err != nil {
				t.Fatal(err)
			}
			return p3, f.p1
		}},
		{"a create by another process", func(t *testing.T, f *headsFixture) (a, b *snapshot.RestorePoint) {
			other, err := snapshot.OpenStore(ctx, f.store, nil)
			if err != nil {
				t.Fatal(err)
			}
			vm, _ := other.Collection("vm")
			p3 := f.create(t, vm)
			return p3, p3
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newHeadsFixture(t)
			a, b := c.change(t, f)
			if c.name == "sound" || c.name == "a point before the heads deleted" {
				f.store.n.Store(0)
				rp := f.checkParents(t, a, b)
				if n := f.store.n.Load(); n > 2 {
					t.Errorf("the create read %d manifests with a sound record; want 2 (the parents)", n)
				}
				f.checkCheap(t, rp, c.name)
				return
			}
			rp := f.checkParents(t, a, b)
			newest := f.checkCheap(t, rp, c.name)
			// "latest", for readers, from the record too.
			for _, disk := range []string{"", "a", "b"} {
				got, err := f.vm.GetWithDisk(ctx, snapshot.Latest, disk)
				if err != nil || got.ID != newest.ID {
					t.Errorf("latest with disk %q: %v, %v; want %s", disk, got, err, newest.ID)
				}
			}
		})
	}
}

// Migrating an encrypted version 1 repository deletes its heads records
// (version 1's seal would leave them unreadable, and version 1 objects
// behind): the first create after rebuilds the record, with the right
// parent.
func TestMigrateEncryptedDropsHeadsRecords(t *testing.T) {
	ctx := context.Background()
	store, _ := encryptedV1Fixture(t)
	repo, err := snapshot.OpenStore(ctx, store, encryptedFixtureKey)
	if err != nil {
		t.Fatal(err)
	}
	disk := makeDisk(t, t.TempDir(), "a.img", 64<<10, 1)
	create := func(repo *snapshot.Repository) *snapshot.RestorePoint {
		t.Helper()
		c, _ := repo.Collection("heads")
		rp, err := c.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "a", Path: disk}}})
		if err != nil {
			t.Fatal(err)
		}
		return rp
	}
	first := create(repo)
	if _, err := store.Get(ctx, "heads/heads"); err != nil {
		t.Fatalf("no heads record before migrate: %v", err)
	}
	if _, err := repo.Migrate(ctx, snapshot.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	repo.Close()
	checkNoVersion1Object(t, store, "after migrate")
	repo, err = snapshot.OpenStore(ctx, store, encryptedFixtureKey)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	if next := create(repo); next.Disks[0].Parent != first.ID {
		t.Errorf("after migrate the parent is %q, want %s", next.Disks[0].Parent, first.ID)
	}
	if _, err := store.Get(ctx, "heads/heads"); err != nil {
		t.Errorf("no heads record after the create: %v", err)
	}
}
