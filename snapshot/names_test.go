package snapshot_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/diskpoint/diskpoint/snapshot"
)

// Names may hold capitals, as VM names do, and case matters: collections
// "VM1" and "vm1" are two, each with its own restore points, state and
// hook log, and "Disk-A" is a disk name like any other.
func TestCapitalsInNames(t *testing.T) {
	ctx := context.Background()
	repo, _ := newRepo(t)
	work := t.TempDir()
	images := map[string][]byte{}
	ids := map[string]string{}
	for i, name := range []string{"VM1", "vm1"} {
		c, err := repo.Collection(name)
		if err != nil {
			t.Fatal(err)
		}
		disk := makeDisk(t, work, name+".img", 256<<10, uint64(40+i))
		rp, err := c.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "Disk-A", Path: disk}}})
		if err != nil {
			t.Fatalf("create in %q: %v", name, err)
		}
		images[name], ids[name] = readFile(t, disk), rp.ID
	}
	got, err := repo.Collections(ctx)
	if err != nil || fmt.Sprint(got) != "[VM1 vm1]" {
		t.Fatalf("Collections = %v, %v; want [VM1 vm1]", got, err)
	}
	for name, image := range images {
		c, _ := repo.Collection(name)
		points, err := c.List(ctx)
		if err != nil || len(points) != 1 || points[0].ID != ids[name] {
			t.Fatalf("%q lists %v, %v; want only its own point %s", name, points, err, ids[name])
		}
		restoreAndCompare(t, c, ids[name], "Disk-A", image)
	}
}
