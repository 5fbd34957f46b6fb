package snapshot_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/snapshot"
)

// manifestReads counts the manifests read from the store.
type manifestReads struct {
	chain.Store
	n atomic.Int64
}

func (s *manifestReads) Get(ctx context.Context, name string) ([]byte, error) {
	if strings.HasPrefix(name, "manifests/") {
		s.n.Add(1)
	}
	return s.Store.Get(ctx, name)
}

// A create finds each disk's parent, and "latest" its point, by reading
// the newest manifests first, not every manifest of the collection: with
// 25 earlier points a create reads a handful. A disk the newest points
// left out still gets the newest point that has it (all of them are read
// to find it), and points created in the same second are told apart by
// their creation time, as List does.
func TestParentsAreFoundWithoutReadingEveryPoint(t *testing.T) {
	ctx := context.Background()
	store := &manifestReads{Store: chain.NewMemStore()}
	repo, err := snapshot.InitStore(ctx, store, snapshot.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vm, _ := repo.Collection("vm")
	dir := t.TempDir()
	a, b := makeDisk(t, dir, "a.img", 256<<10, 1), makeDisk(t, dir, "b.img", 256<<10, 2)
	base := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	create := func(at time.Time, exclude ...string) *snapshot.RestorePoint {
		t.Helper()
		rp, err := vm.Create(ctx, snapshot.CreateOptions{
			Disks:   []snapshot.DiskSource{{Name: "a", Path: a}, {Name: "b", Path: b}},
			Exclude: exclude,
			Now:     func() time.Time { return at },
		})
		if err != nil {
			t.Fatal(err)
		}
		return rp
	}
	withB := create(base)
	for i := range 20 {
		create(base.Add(time.Duration(i+1)*time.Minute), "b")
	}
	// Two points in one second: the later Created is the newer.
	create(base.Add(time.Hour), "b")
	newestA := create(base.Add(time.Hour+500*time.Millisecond), "b")

	rp := create(base.Add(2 * time.Hour))
	parent := map[string]string{}
	for _, d := range rp.Disks {
		parent[d.Name] = d.Parent
	}
	if parent["a"] != newestA.ID || parent["b"] != withB.ID {
		t.Errorf("parents a=%s b=%s; want a=%s (the newest, created in the same second as another) and b=%s (the newest that has b)", parent["a"], parent["b"], newestA.ID, withB.ID)
	}

	store.n.Store(0)
	next := create(base.Add(3 * time.Hour)) // both disks are in the newest point
	if reads := store.n.Load(); reads > 2 {
		t.Errorf("a create after 25 points, whose disks the newest has, read %d manifests; want one", reads)
	}
	if next.Disks[0].Parent != rp.ID || next.Disks[1].Parent != rp.ID {
		t.Errorf("the next create's parents are %s and %s; want %s", next.Disks[0].Parent, next.Disks[1].Parent, rp.ID)
	}
	rp = next

	store.n.Store(0)
	got, err := vm.GetWithDisk(ctx, snapshot.Latest, "a")
	if err != nil || got.ID != rp.ID {
		t.Fatalf("latest with disk a: %v, %v; want %s", got, err, rp.ID)
	}
	if reads := store.n.Load(); reads > 2 {
		t.Errorf("finding the latest point read %d manifests", reads)
	}
	// The same answer as the slow way.
	points, err := vm.List(ctx)
	if err != nil || points[len(points)-1].ID != rp.ID || points[len(points)-3].ID != newestA.ID || points[len(points)-4].ID == newestA.ID {
		t.Errorf("List disagrees: %v", err)
	}
}
