package snapshot_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/snapshot"
)

// RestoreDisk, Diff and Prune take what they act on by name, in option
// structs: a field left out is an error naming it, never a guess, and
// each named field does what it says.
func TestRestoreDiffPruneOptionStructs(t *testing.T) {
	ctx := context.Background()
	vm, ids, images := chainOfThree(t)
	target := filepath.Join(t.TempDir(), "d.img")
	for _, opts := range []snapshot.RestoreOptions{
		{Disk: "d", Path: target},
		{Point: ids[0], Path: target},
		{Point: ids[0], Disk: "d"},
	} {
		if _, err := vm.RestoreDisk(ctx, opts); err == nil || !strings.Contains(err.Error(), "Point, Disk and Path are required") {
			t.Errorf("RestoreDisk(%+v): %v; want the required fields named", opts, err)
		}
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Errorf("a refused restore wrote %s (%v)", target, err)
	}
	if _, err := vm.RestoreDisk(ctx, snapshot.RestoreOptions{Point: ids[1], Disk: "d", Path: target}); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, target); string(got) != string(images[1]) {
		t.Error("restoring Point 1 did not write point 1's disk")
	}

	for _, opts := range []snapshot.DiffOptions{{From: ids[0], To: ids[1]}, {Disk: "d", To: ids[1]}, {Disk: "d", From: ids[0]}} {
		if _, err := vm.Diff(ctx, opts); err == nil || !strings.Contains(err.Error(), "Disk, From and To are required") {
			t.Errorf("Diff(%+v): %v; want the required fields named", opts, err)
		}
	}
	same, err := vm.Diff(ctx, snapshot.DiffOptions{Disk: "d", From: ids[1], To: ids[1]})
	if err != nil || len(same) != 0 {
		t.Errorf("a point against itself: %v, %v", same, err)
	}
	changed, err := vm.Diff(ctx, snapshot.DiffOptions{Disk: "d", From: ids[0], To: ids[1]})
	if err != nil || len(changed) == 0 {
		t.Errorf("point 0 to 1: %v, %v; want the changed ranges", changed, err)
	}

	dry, err := vm.Prune(ctx, snapshot.PruneOptions{Policy: snapshot.RetentionPolicy{Last: 1}, DryRun: true})
	if err != nil || !dry.DryRun || len(dry.Deleted) != 2 {
		t.Fatalf("dry run: %+v, %v", dry, err)
	}
	if points, _ := vm.List(ctx); len(points) != 3 {
		t.Errorf("a dry run left %d of 3 points", len(points))
	}
	if _, err := vm.Prune(ctx, snapshot.PruneOptions{Policy: snapshot.RetentionPolicy{Last: 1}}); err != nil {
		t.Fatal(err)
	}
	if points, _ := vm.List(ctx); len(points) != 1 || points[0].ID != ids[2] {
		t.Errorf("after prune keeping the last: %d points", len(points))
	}
}
