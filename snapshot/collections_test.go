package snapshot_test

import (
	"context"
	"testing"

	"github.com/diskpoint/diskpoint/snapshot"
)

// Collections lists the collections with restore points; Used also knows
// the ones that only have state or hook logs left.
func TestCollectionsAndUsed(t *testing.T) {
	ctx := context.Background()
	repo, _ := newRepo(t)
	disk := makeDisk(t, t.TempDir(), "d.img", 1<<20, 1)
	for _, name := range []string{"b", "a"} {
		c, _ := repo.Collection(name)
		if _, err := c.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}, RateLimit: &snapshot.RateLimit{Max: 9, Per: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	names, err := repo.Collections(ctx)
	if err != nil || len(names) != 2 || names[0] != "a" || names[1] != "b" {
		t.Fatalf("Collections: %v, %v", names, err)
	}
	a, _ := repo.Collection("a")
	points, _ := a.List(ctx)
	if err := a.Delete(ctx, points[0].ID); err != nil {
		t.Fatal(err)
	}
	if used, err := a.Used(ctx); !used || err != nil {
		t.Errorf("a collection with state left: Used = %v, %v", used, err)
	}
	typo, _ := repo.Collection("bb")
	if used, err := typo.Used(ctx); used || err != nil {
		t.Errorf("a collection never used: Used = %v, %v", used, err)
	}
	b, _ := repo.Collection("b")
	if used, err := b.Used(ctx); !used || err != nil {
		t.Errorf("a collection with a point: Used = %v, %v", used, err)
	}
}
