package snapshot_test

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/consistency"
	"github.com/diskpoint/diskpoint/snapshot"
)

// counted is a FuncHook that counts its calls and fails Freeze while fail is set.
type counted struct {
	consistency.FuncHook
	ready, freezes, thaws atomic.Int32
	fail                  atomic.Bool
}

func newCounted(name string, level consistency.Level) *counted {
	h := &counted{}
	h.FuncHook = consistency.FuncHook{
		HookName: name, HookLevel: level,
		ReadyFunc: func(context.Context) error { h.ready.Add(1); return nil },
		FreezeFunc: func(context.Context) error {
			h.freezes.Add(1)
			if h.fail.Load() {
				return errors.New("pre script exit 3")
			}
			return nil
		},
		ThawFunc: func(context.Context) error { h.thaws.Add(1); return nil },
	}
	return h
}

// The Azure fallback sequence, step by step, with the process "restarted"
// (the repository reopened) between steps: a failed application attempt
// gives a file-system-consistent point; the next three application requests
// skip the application hooks; the fourth runs them again.
func TestFallbackSequenceAcrossRestarts(t *testing.T) {
	ctx := context.Background()
	_, dir := newRepo(t)
	disk := makeDisk(t, t.TempDir(), "d.img", 1<<20, 1)
	app := newCounted("app", consistency.ApplicationLevel)
	fs := newCounted("fs", consistency.FileSystemLevel)
	app.fail.Store(true)
	create := func(step int) *snapshot.RestorePoint {
		repo, err := snapshot.Open(ctx, dir) // a new process, as far as the repository knows
		if err != nil {
			t.Fatal(err)
		}
		vm, _ := repo.Collection("vm")
		rp, err := vm.Create(ctx, snapshot.CreateOptions{
			Disks:       []snapshot.DiskSource{{Name: "d", Path: disk}},
			Consistency: consistency.Application,
			Hooks:       []consistency.Hook{app, fs},
		})
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if rp.RequestedConsistency != "application" {
			t.Errorf("step %d: requested %q", step, rp.RequestedConsistency)
		}
		return rp
	}

	rp := create(1)
	if rp.Consistency != "filesystem" || !strings.Contains(rp.FallbackReason, "pre script exit 3") {
		t.Fatalf("step 1: achieved %q because %q", rp.Consistency, rp.FallbackReason)
	}
	if app.freezes.Load() != 1 || app.thaws.Load() != 1 || fs.freezes.Load() != 1 || fs.thaws.Load() != 1 {
		t.Fatalf("step 1: app %d/%d fs %d/%d freezes/thaws", app.freezes.Load(), app.thaws.Load(), fs.freezes.Load(), fs.thaws.Load())
	}
	app.fail.Store(false) // fixed now, but the next three must not even try
	for step := 2; step <= 4; step++ {
		rp := create(step)
		if rp.Consistency != "filesystem" || !strings.Contains(rp.FallbackReason, "skipped") {
			t.Fatalf("step %d: achieved %q because %q", step, rp.Consistency, rp.FallbackReason)
		}
		if app.ready.Load() != 1 || app.freezes.Load() != 1 {
			t.Fatalf("step %d: application hook ran (ready %d, freeze %d)", step, app.ready.Load(), app.freezes.Load())
		}
		if fs.freezes.Load() != int32(step) || fs.thaws.Load() != int32(step) {
			t.Fatalf("step %d: file-system hook froze %d, thawed %d times", step, fs.freezes.Load(), fs.thaws.Load())
		}
	}
	rp = create(5)
	if rp.Consistency != "application" || rp.FallbackReason != "" || app.freezes.Load() != 2 {
		t.Fatalf("step 5: achieved %q because %q; app hook froze %d times", rp.Consistency, rp.FallbackReason, app.freezes.Load())
	}
}

func TestFailAndSkipPoliciesStoreNothing(t *testing.T) {
	ctx := context.Background()
	disk := makeDisk(t, t.TempDir(), "d.img", 1<<20, 1)
	for _, tc := range []struct {
		policy consistency.OnFailure
		errIs  error
	}{{consistency.Fail, nil}, {consistency.Skip, consistency.ErrSkipped}} {
		repo, _ := newRepo(t)
		vm, _ := repo.Collection("vm")
		app := newCounted("app", consistency.ApplicationLevel)
		fs := newCounted("fs", consistency.FileSystemLevel)
		fs.fail.Store(true)
		_, err := vm.Create(ctx, snapshot.CreateOptions{
			Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}, Consistency: consistency.Application,
			Hooks: []consistency.Hook{app, fs}, OnFailure: tc.policy,
		})
		if err == nil || (tc.errIs != nil && !errors.Is(err, tc.errIs)) {
			t.Fatalf("policy %d: %v", tc.policy, err)
		}
		if app.thaws.Load() != 1 || fs.thaws.Load() != 1 {
			t.Errorf("policy %d: not everything thawed: app %d, fs %d", tc.policy, app.thaws.Load(), fs.thaws.Load())
		}
		if points, _ := vm.List(ctx); len(points) != 0 {
			t.Errorf("policy %d: %d restore points stored", tc.policy, len(points))
		}
		runs, err := hookRuns(ctx, vm)
		if err != nil || len(runs) == 0 || !strings.Contains(runs[len(runs)-3].Error+runs[len(runs)-2].Error+runs[len(runs)-1].Error, "pre script exit 3") {
			t.Errorf("policy %d: hook log %+v, %v", tc.policy, runs, err)
		}
	}
}

func TestOneCreatePerCollection(t *testing.T) {
	ctx := context.Background()
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	other, _ := repo.Collection("other")
	disk := makeDisk(t, t.TempDir(), "d.img", 1<<20, 1)
	entered, release := make(chan struct{}), make(chan struct{})
	pause := &consistency.FuncHook{HookName: "pause", HookLevel: consistency.PauseLevel,
		FreezeFunc: func(context.Context) error { close(entered); <-release; return nil }}
	first := make(chan error, 1)
	go func() {
		_, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}},
			Hooks: []consistency.Hook{pause}, MaxFreeze: time.Minute})
		first <- err
	}()
	<-entered // the first create holds the collection
	src := []snapshot.DiskSource{{Name: "d", Path: disk}}
	if _, err := vm.Create(ctx, snapshot.CreateOptions{Disks: src}); !errors.Is(err, snapshot.ErrLocked) {
		t.Fatalf("second create of a busy collection: %v, want ErrLocked", err)
	}
	if _, err := other.Create(ctx, snapshot.CreateOptions{Disks: src}); err != nil {
		t.Fatalf("another collection is not blocked: %v", err)
	}
	waited := make(chan error, 1)
	go func() {
		_, err := vm.Create(ctx, snapshot.CreateOptions{Disks: src, LockWait: time.Minute})
		waited <- err
	}()
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatalf("a create that waits for the lock: %v", err)
	}
	if points, _ := vm.List(ctx); len(points) != 2 {
		t.Errorf("%d restore points, want 2", len(points))
	}
}

func TestRateLimit(t *testing.T) {
	ctx := context.Background()
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	disk := makeDisk(t, t.TempDir(), "d.img", 1<<20, 1)
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	now := t0
	create := func(mode consistency.Mode) error {
		_, err := vm.Create(ctx, snapshot.CreateOptions{
			Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}, Consistency: mode,
			Hooks:     []consistency.Hook{newCounted("fs", consistency.FileSystemLevel)},
			RateLimit: &snapshot.AzureRateLimit, Now: func() time.Time { return now },
		})
		return err
	}
	for _, at := range []time.Duration{0, 10 * time.Minute, 25 * time.Minute} {
		now = t0.Add(at)
		if err := create(consistency.Crash); err != nil {
			t.Fatalf("create at +%s: %v", at, err)
		}
	}
	now = t0.Add(40 * time.Minute)
	err := create(consistency.Crash)
	var te *snapshot.ThrottledError
	if !errors.Is(err, snapshot.ErrThrottled) || !errors.As(err, &te) || te.RetryAfter != 20*time.Minute {
		t.Fatalf("fourth crash create in the hour: %v (%+v), want ErrThrottled retrying after 20m", err, te)
	}
	if err := create(consistency.FileSystem); err != nil {
		t.Fatalf("another mode has its own budget: %v", err)
	}
	now = t0.Add(60 * time.Minute) // the first create has left the window
	if err := create(consistency.Crash); err != nil {
		t.Fatalf("create after the window moved on: %v", err)
	}
	if points, _ := vm.List(ctx); len(points) != 5 {
		t.Errorf("%d restore points, want 5", len(points))
	}
}

// A writer keeps writing one counter to both disks of a VM, the way a guest
// writes to two disks; a pause hook (the hypervisor pausing the VM) holds
// it between writes. Every restore point must hold the same counter on both
// disks: the disks were captured at one instant.
func TestDisksCapturedAtOneInstant(t *testing.T) {
	ids, vm := captureCounterDisks(t, t.TempDir(), 5)
	if rp, _ := vm.Get(context.Background(), ids[0]); rp.Disks[0].Capture == "" {
		t.Errorf("capture method not recorded: %+v", rp.Disks[0])
	}
}

// captureCounterDisks makes two disk images in dir, keeps a writer writing
// one counter to both, takes n restore points with a pause hook, and checks
// that every restore point holds the same counter on both disks.
func captureCounterDisks(t *testing.T, dir string, n int) ([]string, *snapshot.Collection) {
	t.Helper()
	ctx := context.Background()
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, make([]byte, 256<<10), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	fa, _ := os.OpenFile(a, os.O_WRONLY, 0)
	fb, _ := os.OpenFile(b, os.O_WRONLY, 0)
	defer fa.Close()
	defer fb.Close()
	var vmRunning sync.Mutex
	stop := make(chan struct{})
	var writes atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 8)
		for n := uint64(1); ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			vmRunning.Lock()
			binary.LittleEndian.PutUint64(buf, n)
			fa.WriteAt(buf, 4096)
			fb.WriteAt(buf, 8192)
			vmRunning.Unlock()
			writes.Add(1)
		}
	})
	pause := &consistency.FuncHook{HookName: "hypervisor-pause", HookLevel: consistency.PauseLevel,
		FreezeFunc: func(context.Context) error { vmRunning.Lock(); return nil },
		ThawFunc:   func(context.Context) error { vmRunning.Unlock(); return nil }}
	for writes.Load() == 0 { // a point taken before the first write holds 0 on both disks
		runtime.Gosched()
	}
	var ids []string
	for range n {
		before := writes.Load()
		rp, err := vm.Create(ctx, snapshot.CreateOptions{
			Disks: []snapshot.DiskSource{{Name: "a", Path: a}, {Name: "b", Path: b}},
			Hooks: []consistency.Hook{pause},
		})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rp.ID)
		for writes.Load() == before { // let the writer move on between points
			runtime.Gosched()
		}
	}
	close(stop)
	wg.Wait()
	for _, id := range ids {
		var counters [2]uint64
		for i, disk := range []struct {
			name string
			off  int
		}{{"a", 4096}, {"b", 8192}} {
			out := filepath.Join(t.TempDir(), disk.name)
			if _, err := vm.RestoreDisk(ctx, snapshot.RestoreOptions{Point: id, Disk: disk.name, Path: out}); err != nil {
				t.Fatal(err)
			}
			counters[i] = binary.LittleEndian.Uint64(readFile(t, out)[disk.off:])
		}
		if counters[0] != counters[1] || counters[0] == 0 {
			t.Errorf("restore point %s: disk a says %d, disk b says %d", id, counters[0], counters[1])
		}
	}
	return ids, vm
}

func TestCreateRefusesUnknownMode(t *testing.T) {
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	disk := makeDisk(t, t.TempDir(), "d.img", 1<<20, 1)
	_, err := vm.Create(context.Background(), snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}, Consistency: "quantum"})
	if err == nil || !strings.Contains(err.Error(), "quantum") {
		t.Fatalf("unknown mode: %v", err)
	}
	if vr, err := repo.Verify(context.Background(), snapshot.VerifyOptions{}); err != nil || !vr.OK() {
		t.Fatal(vr, err)
	}
}
