package snapshot_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/consistency"
	"github.com/diskpoint/diskpoint/snapshot"
)

// hookRuns collects a collection's hook log.
func hookRuns(ctx context.Context, c *snapshot.Collection) ([]consistency.Run, error) {
	var runs []consistency.Run
	for r, err := range c.HookLog(ctx) {
		if err != nil {
			return runs, err
		}
		runs = append(runs, r)
	}
	return runs, nil
}

// hookLogFiles lists the IDs of a collection's stored hook logs.
func hookLogFiles(t *testing.T, repoDir, collection string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(repoDir, "logs", collection))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		if id, ok := strings.CutSuffix(e.Name(), ".jsonl"); ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// createWithHook makes a restore point whose create ran one hook, so it has
// a hook log.
func createWithHook(t *testing.T, vm *snapshot.Collection, disk string) *snapshot.RestorePoint {
	t.Helper()
	rp, err := vm.Create(context.Background(), snapshot.CreateOptions{
		Disks:       []snapshot.DiskSource{{Name: "d", Path: disk}},
		Consistency: consistency.FileSystem,
		Hooks:       []consistency.Hook{newCounted("fs", consistency.FileSystemLevel)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return rp
}

// A restore point's hook log goes with it, by Delete or by Prune; the logs
// of other points stay.
func TestDeleteAndPruneRemoveHookLogs(t *testing.T) {
	ctx := context.Background()
	repo, dir := newRepo(t)
	vm, _ := repo.Collection("vm")
	disk := makeDisk(t, t.TempDir(), "d.img", 1<<20, 1)
	var ids []string
	for range 4 {
		ids = append(ids, createWithHook(t, vm, disk).ID)
	}
	slices.Sort(ids) // as hookLogFiles lists them
	if got := hookLogFiles(t, dir, "vm"); !slices.Equal(got, ids) {
		t.Fatalf("hook logs %v, want one per restore point %v", got, ids)
	}

	if err := vm.Delete(ctx, ids[1]); err != nil {
		t.Fatal(err)
	}
	want := []string{ids[0], ids[2], ids[3]}
	if got := hookLogFiles(t, dir, "vm"); !slices.Equal(got, want) {
		t.Fatalf("after deleting %s: hook logs %v, want %v", ids[1], got, want)
	}

	res, err := vm.Prune(ctx, snapshot.PruneOptions{Policy: snapshot.RetentionPolicy{Last: 1}})
	if err != nil || len(res.Deleted) != 2 || len(res.Kept) != 1 {
		t.Fatalf("prune: %+v, %v", res, err)
	}
	if got := hookLogFiles(t, dir, "vm"); !slices.Equal(got, []string{res.Kept[0].ID}) {
		t.Fatalf("after pruning to the last point %s: hook logs %v", res.Kept[0].ID, got)
	}
	runs, err := hookRuns(ctx, vm)
	if err != nil || len(runs) != 3 { // ready, freeze, thaw of the one create left
		t.Fatalf("hook log after prune: %+v, %v", runs, err)
	}
}

// Failed creates store no restore point but keep their hook logs, the
// newest KeptFailedCreateLogs of them; the logs of restore points are not
// counted and not trimmed.
func TestHookLogsOfFailedCreatesAreCapped(t *testing.T) {
	ctx := context.Background()
	repo, dir := newRepo(t)
	vm, _ := repo.Collection("vm")
	disk := makeDisk(t, t.TempDir(), "d.img", 64<<10, 1)
	kept := createWithHook(t, vm, disk).ID
	failing := newCounted("fs", consistency.FileSystemLevel)
	failing.fail.Store(true)
	const failures = snapshot.KeptFailedCreateLogs + 5
	for i := range failures {
		_, err := vm.Create(ctx, snapshot.CreateOptions{
			Disks:       []snapshot.DiskSource{{Name: "d", Path: disk}},
			Consistency: consistency.FileSystem,
			Hooks:       []consistency.Hook{failing},
			OnFailure:   consistency.Fail,
		})
		if err == nil {
			t.Fatalf("create %d with a failing hook and OnFailure Fail succeeded", i)
		}
	}
	logs := hookLogFiles(t, dir, "vm")
	if len(logs) != snapshot.KeptFailedCreateLogs+1 {
		t.Fatalf("%d hook logs after %d failed creates and 1 restore point, want %d", len(logs), failures, snapshot.KeptFailedCreateLogs+1)
	}
	if !slices.Contains(logs, kept) {
		t.Errorf("the hook log of restore point %s was trimmed", kept)
	}
	if freezes := failing.freezes.Load(); freezes != failures {
		t.Fatalf("the failing hook ran %d times, want %d", freezes, failures)
	}
	// The newest failures are the ones kept: the last create's log is there.
	runs, err := hookRuns(ctx, vm)
	if err != nil || len(runs) != 3+3*snapshot.KeptFailedCreateLogs {
		t.Fatalf("%d runs, %v; want 3 of the restore point and 3 of each kept failure", len(runs), err)
	}
}

// HookLog yields every run of every create, one create after the other (in
// the order of their IDs, which is by time to the second) and in order
// within one, and stops when the caller stops.
func TestHookLogStreamsRunsInOrder(t *testing.T) {
	ctx := context.Background()
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	disk := makeDisk(t, t.TempDir(), "d.img", 1<<20, 1)
	for range 3 {
		createWithHook(t, vm, disk)
	}
	runs, err := hookRuns(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	var phases []string
	for _, r := range runs {
		if r.Hook != "fs" || r.Outcome != "ok" {
			t.Errorf("run %+v", r)
		}
		phases = append(phases, r.Phase)
	}
	want := strings.Repeat("ready freeze thaw ", 3)
	if got := strings.Join(phases, " ") + " "; got != want {
		t.Fatalf("phases %q, want %q", got, want)
	}
	n := 0
	for range vm.HookLog(ctx) {
		if n++; n == 2 {
			break
		}
	}
	if n != 2 {
		t.Fatalf("stopped after %d runs", n)
	}
}
