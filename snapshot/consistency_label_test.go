package snapshot_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/blockdiff"
	"github.com/diskpoint/diskpoint/consistency"
	"github.com/diskpoint/diskpoint/internal/systest"
	"github.com/diskpoint/diskpoint/snapshot"
)

// pauseHook is a pause hook that holds nothing: enough for Create to know
// that the disks are held still.
func pauseHook() consistency.Hook {
	return &consistency.FuncHook{HookName: "pause", HookLevel: consistency.PauseLevel}
}

// A restore point records the mode its hooks and its capture achieved,
// never the mode asked for, and says why it is weaker.
func TestConsistencyIsWhatHappened(t *testing.T) {
	ctx := context.Background()
	liveDir := noReflinkDir(t)
	for _, tc := range []struct {
		name    string
		mode    consistency.Mode
		hooks   []consistency.Hook
		want    consistency.Mode
		capture string
		why     []string
	}{
		{"application without hooks, read live", consistency.Application, nil, consistency.Inconsistent, "read",
			[]string{"no application hooks configured", "no file-system freeze hooks configured", `disk "d" was read while in use`}},
		{"application without hooks, paused", consistency.Application, []consistency.Hook{pauseHook()}, consistency.Crash, "read-frozen",
			[]string{"no application hooks configured", "no file-system freeze hooks configured"}},
		{"filesystem without a freeze, paused", consistency.FileSystem, []consistency.Hook{pauseHook()}, consistency.Crash, "read-frozen",
			[]string{"no file-system freeze hooks configured"}},
		{"filesystem with a freeze", consistency.FileSystem, []consistency.Hook{newCounted("fs", consistency.FileSystemLevel)}, consistency.FileSystem, "read-frozen", nil},
		{"crash, read live", consistency.Crash, nil, consistency.Inconsistent, "read", []string{"read while in use"}},
		{"application hooks, read live", consistency.Application, []consistency.Hook{newCounted("app", consistency.ApplicationLevel)}, consistency.Inconsistent, "read",
			[]string{"read while in use"}},
		{"application hooks and a freeze", consistency.Application, []consistency.Hook{newCounted("app", consistency.ApplicationLevel), newCounted("fs", consistency.FileSystemLevel)},
			consistency.Application, "read-frozen", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo, _ := newRepo(t)
			vm, _ := repo.Collection("vm")
			disk := makeDisk(t, liveDir, "d.img", 1<<20, 1)
			rp, err := vm.Create(ctx, snapshot.CreateOptions{
				Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}, Consistency: tc.mode, Hooks: tc.hooks,
			})
			if err != nil {
				t.Fatal(err)
			}
			if rp.Consistency != tc.want || rp.RequestedConsistency != tc.mode || rp.Disks[0].Capture != tc.capture {
				t.Errorf("asked %s: recorded %q (capture %q), want %q (capture %q)", rp.RequestedConsistency, rp.Consistency, rp.Disks[0].Capture, tc.want, tc.capture)
			}
			for _, w := range tc.why {
				if !strings.Contains(rp.FallbackReason, w) {
					t.Errorf("fallback_reason %q does not say %q", rp.FallbackReason, w)
				}
			}
			if tc.why == nil && rp.FallbackReason != "" {
				t.Errorf("fallback_reason %q for a mode achieved as asked", rp.FallbackReason)
			}
			// What the manifest says is what was stored.
			stored, err := vm.Get(ctx, rp.ID)
			if err != nil || stored.Consistency != rp.Consistency || stored.FallbackReason != rp.FallbackReason {
				t.Errorf("stored %+v, %v", stored, err)
			}
		})
	}
}

// A file-system hook that failed and was fallen back from holds nothing:
// the disk read afterwards is read live, and labelled so, not "read-frozen".
func TestFailedFreezeDoesNotCountAsHeld(t *testing.T) {
	ctx := context.Background()
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	fs := newCounted("fs", consistency.FileSystemLevel)
	fs.fail.Store(true)
	disk := makeDisk(t, noReflinkDir(t), "d.img", 1<<20, 1)
	rp, err := vm.Create(ctx, snapshot.CreateOptions{
		Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}, Consistency: consistency.FileSystem,
		Hooks: []consistency.Hook{fs},
	})
	if err != nil {
		t.Fatal(err)
	}
	if rp.Disks[0].Capture != "read" || rp.Consistency != "inconsistent" ||
		!strings.Contains(rp.FallbackReason, "pre script exit 3") || !strings.Contains(rp.FallbackReason, "read while in use") {
		t.Errorf("after a failed freeze: capture %q, consistency %q because %q", rp.Disks[0].Capture, rp.Consistency, rp.FallbackReason)
	}
}

// declaringSnapshotter is a testSnapshotter that says what its snapshots
// are worth.
type declaringSnapshotter struct {
	*testSnapshotter
	mode consistency.Mode
}

func (s declaringSnapshotter) SnapshotConsistency() consistency.Mode { return s.mode }

// Several disks are consistent together only if captured at one instant: a
// snapshotter that does not say it snapshots them atomically, with nothing
// holding them still, gives an inconsistent restore point; one that does,
// or a pause hook, a crash-consistent one; one that quiesces file systems,
// a file-system-consistent one.
func TestSeveralDisksNeedOneInstant(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	disks := []snapshot.DiskSource{{Name: "wal", Path: makeDisk(t, dir, "wal.img", 1<<20, 1)}, {Name: "data", Path: makeDisk(t, dir, "data.img", 1<<20, 2)}}
	for _, tc := range []struct {
		name        string
		snapshotter blockdiff.Snapshotter
		mode        consistency.Mode
		hooks       []consistency.Hook
		want        consistency.Mode
		why         string
	}{
		{"plain snapshotter", newTestSnapshotter(), consistency.Crash, nil, consistency.Inconsistent, "2 disks captured one after another"},
		{"plain snapshotter, paused", newTestSnapshotter(), consistency.Crash, []consistency.Hook{pauseHook()}, consistency.Crash, ""},
		{"atomic snapshotter", declaringSnapshotter{newTestSnapshotter(), consistency.Crash}, consistency.Crash, nil, consistency.Crash, ""},
		{"atomic snapshotter, filesystem asked", declaringSnapshotter{newTestSnapshotter(), consistency.Crash}, consistency.FileSystem, nil, consistency.Crash, "no file-system freeze hooks configured"},
		{"quiescing snapshotter", declaringSnapshotter{newTestSnapshotter(), consistency.FileSystem}, consistency.FileSystem, nil, consistency.FileSystem, ""},
		{"quiescing snapshotter, application asked", declaringSnapshotter{newTestSnapshotter(), consistency.Application}, consistency.Application, nil, consistency.FileSystem, "no application hooks configured"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo, _ := newRepo(t)
			vm, _ := repo.Collection("vm")
			rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: disks, Consistency: tc.mode, Hooks: tc.hooks, Snapshotter: tc.snapshotter})
			if err != nil {
				t.Fatal(err)
			}
			if rp.Consistency != tc.want || !strings.Contains(rp.FallbackReason, tc.why) || (tc.why == "" && rp.FallbackReason != "") {
				t.Errorf("recorded %q because %q; want %q because %q", rp.Consistency, rp.FallbackReason, tc.want, tc.why)
			}
			if rp.CaptureSpreadMillis < 0 || rp.CaptureSpreadMillis > rp.FreezeMillis+1 {
				t.Errorf("capture spread %d ms, freeze window %d ms: the snapshot was taken inside the window", rp.CaptureSpreadMillis, rp.FreezeMillis)
			}
		})
	}
}

// Two image files reflink-cloned one after another while nothing holds
// them still are not captured at one instant: the restore point says so,
// with the spread between the clones; under a pause hook they are.
func TestReflinkClonesWithoutAHoldAreNotOneInstant(t *testing.T) {
	systest.Require(t, "mkfs.xfs")
	ctx := context.Background()
	_, host := systest.FileSystem(t, t.TempDir(), "xfs", 512<<20)
	disks := []snapshot.DiskSource{
		{Name: "wal", Path: fragmentedImage(t, host, "wal.img", 8<<20)},
		{Name: "data", Path: fragmentedImage(t, host, "data.img", 8<<20)},
	}
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: disks})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range rp.Disks {
		if d.Capture != "reflink" {
			t.Fatalf("disk %s captured by %q, want reflink", d.Name, d.Capture)
		}
	}
	if rp.Consistency != "inconsistent" || !strings.Contains(rp.FallbackReason, "not at one instant") {
		t.Errorf("two clones, no hold: %q because %q", rp.Consistency, rp.FallbackReason)
	}
	// Cloning thousands of extents takes measurable time: the spread shows it.
	if rp.CaptureSpreadMillis <= 0 {
		t.Errorf("capture_spread_ms %d for two clones of fragmented images", rp.CaptureSpreadMillis)
	}
	t.Logf("two reflink clones spread over %d ms", rp.CaptureSpreadMillis)

	rp, err = vm.Create(ctx, snapshot.CreateOptions{Disks: disks, Hooks: []consistency.Hook{pauseHook()}})
	if err != nil {
		t.Fatal(err)
	}
	if rp.Consistency != "crash" || rp.FallbackReason != "" {
		t.Errorf("two clones under a pause: %q because %q", rp.Consistency, rp.FallbackReason)
	}
	// One disk's clone is an instant by itself.
	rp, err = vm.Create(ctx, snapshot.CreateOptions{Disks: disks[:1]})
	if err != nil {
		t.Fatal(err)
	}
	if rp.Consistency != "crash" || rp.FallbackReason != "" {
		t.Errorf("one clone: %q because %q", rp.Consistency, rp.FallbackReason)
	}
}

// A post script that fails after freeze, capture and thaw succeeded keeps
// the restore point, with the failure in its warnings and in the hook log;
// it counts as an application failure, so the next application request
// skips the hooks. Under OnFailure Fail it still fails the create.
func TestFailingPostScriptKeepsTheRestorePoint(t *testing.T) {
	ctx := context.Background()
	disk := makeDisk(t, t.TempDir(), "d.img", 1<<20, 1)
	newApp := func() *counted {
		app := newCounted("app", consistency.ApplicationLevel)
		app.ThawFunc = func(context.Context) error { app.thaws.Add(1); return errors.New("post script exit 3") }
		return app
	}
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	app := newApp()
	opts := snapshot.CreateOptions{
		Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}, Consistency: consistency.Application,
		Hooks: []consistency.Hook{app, newCounted("fs", consistency.FileSystemLevel)},
	}
	rp, err := vm.Create(ctx, opts)
	if err != nil {
		t.Fatalf("a failing post script failed the create: %v", err)
	}
	if rp.Consistency != "application" || len(rp.Warnings) != 1 || !strings.Contains(rp.Warnings[0], "post script exit 3") {
		t.Errorf("restore point: consistency %q, warnings %q", rp.Consistency, rp.Warnings)
	}
	if stored, err := vm.Get(ctx, rp.ID); err != nil || len(stored.Warnings) != 1 {
		t.Errorf("stored warnings: %v, %v", stored, err)
	}
	runs, err := hookRuns(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range runs {
		found = found || (r.Hook == "app" && r.Phase == "thaw" && r.Outcome == "failed" && strings.Contains(r.Error, "post script exit 3"))
	}
	if !found {
		t.Errorf("hook log lacks the failed post script: %+v", runs)
	}
	next, err := vm.Create(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if next.Consistency != "filesystem" || !strings.Contains(next.FallbackReason, "post script exit 3") || app.freezes.Load() != 1 {
		t.Errorf("next application request: %q because %q, application hook froze %d times; want it skipped", next.Consistency, next.FallbackReason, app.freezes.Load())
	}

	repo2, _ := newRepo(t)
	vm2, _ := repo2.Collection("vm")
	opts.Hooks = []consistency.Hook{newApp(), newCounted("fs", consistency.FileSystemLevel)}
	opts.OnFailure = consistency.Fail
	if _, err := vm2.Create(ctx, opts); err == nil || !strings.Contains(err.Error(), "post script exit 3") {
		t.Fatalf("OnFailure Fail: %v, want the post script's error", err)
	}
	if points, _ := vm2.List(ctx); len(points) != 0 {
		t.Errorf("OnFailure Fail stored %d restore points", len(points))
	}
}

// Manifests written before the achieved mode was judged, without
// capture_spread_ms and warnings, still load.
func TestOldManifestStillLoads(t *testing.T) {
	ctx := context.Background()
	repo, dir := newRepo(t)
	vm, _ := repo.Collection("vm")
	rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: makeDisk(t, t.TempDir(), "d.img", 1<<20, 1)}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "manifests", "vm", rp.ID)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	old := strings.Replace(string(data), `"capture_spread_ms"`, `"unknown_then"`, 1)
	if old == string(data) {
		t.Fatalf("manifest lacks capture_spread_ms:\n%s", data)
	}
	if err := os.WriteFile(path, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := vm.Get(ctx, rp.ID)
	if err != nil || got.CaptureSpreadMillis != 0 || got.Warnings != nil {
		t.Fatalf("an old manifest: %+v, %v", got, err)
	}
}
