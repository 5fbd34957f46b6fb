package snapshot_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/blockdiff"
	"github.com/diskpoint/diskpoint/consistency"
	"github.com/diskpoint/diskpoint/snapshot"
)

// waitLong bounds waits for something that should happen at once: long
// enough for a loaded machine, short enough to fail rather than hang.
const waitLong = 30 * time.Second

// testSnapshotter hands out "snapshots" that are the disks themselves and
// counts their releases. With proceed set, Snapshot ignores its context and
// returns only when the test closes proceed, as an LVM snapshot or FICLONE
// that cannot be interrupted does.
type testSnapshotter struct {
	entered    chan struct{} // closed when Snapshot is called, if set
	proceed    chan struct{} // Snapshot waits for it, if set
	extraPath  bool          // return one copy too many: the capture fails
	releaseErr error

	releases atomic.Int32
	released chan struct{} // gets a value on each Release
}

func newTestSnapshotter() *testSnapshotter {
	return &testSnapshotter{released: make(chan struct{}, 16)}
}

func (s *testSnapshotter) Snapshot(ctx context.Context, paths []string) (blockdiff.Snapshot, error) {
	if s.entered != nil {
		close(s.entered)
	}
	if s.proceed != nil {
		<-s.proceed // ignores ctx on purpose
	}
	copies := append([]string(nil), paths...)
	if s.extraPath {
		copies = append(copies, paths[0])
	}
	return &testSnapshot{s: s, paths: copies}, nil
}

type testSnapshot struct {
	s     *testSnapshotter
	paths []string
}

func (sn *testSnapshot) Paths() []string { return sn.paths }

func (sn *testSnapshot) Release(context.Context) error {
	sn.s.releases.Add(1)
	sn.s.released <- struct{}{}
	return sn.s.releaseErr
}

// A snapshotter that overruns MaxFreeze and ignores its context: Create
// returns the timeout without waiting for it, and the snapshot it returns
// later is released, once.
func TestCaptureAfterFreezeTimeoutIsReleased(t *testing.T) {
	ctx := context.Background()
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	disk := makeDisk(t, t.TempDir(), "d.img", 1<<20, 1)
	snap := newTestSnapshotter()
	snap.entered, snap.proceed = make(chan struct{}), make(chan struct{})
	proceedOnce := func() {
		select {
		case <-snap.proceed:
		default:
			close(snap.proceed)
		}
	}
	defer proceedOnce() // never leave the snapshotter's goroutine hanging

	created := make(chan error, 1)
	go func() {
		_, err := vm.Create(ctx, snapshot.CreateOptions{
			Disks:       []snapshot.DiskSource{{Name: "d", Path: disk}},
			MaxFreeze:   50 * time.Millisecond,
			Snapshotter: snap,
		})
		created <- err
	}()
	<-snap.entered
	select {
	case err := <-created:
		if !errors.Is(err, consistency.ErrFreezeTimeout) {
			t.Fatalf("create: %v, want ErrFreezeTimeout", err)
		}
	case <-time.After(waitLong):
		t.Fatal("create waits for a capture that ignores its context")
	}
	if n := snap.releases.Load(); n != 0 {
		t.Fatalf("released %d times before the snapshot existed", n)
	}

	proceedOnce() // the snapshot is made now, after the create returned
	select {
	case <-snap.released:
	case <-time.After(waitLong):
		t.Fatal("the snapshot made after the timeout was never released")
	}
	if n := snap.releases.Load(); n != 1 {
		t.Fatalf("released %d times, want once", n)
	}
	if points, _ := vm.List(ctx); len(points) != 0 {
		t.Errorf("a timed-out create stored %d restore points", len(points))
	}
	// The next create is not disturbed by the late release, and releases its own snapshot.
	snap2 := newTestSnapshotter()
	if _, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}, Snapshotter: snap2}); err != nil {
		t.Fatal(err)
	}
	if n := snap.releases.Load() + snap2.releases.Load(); n != 2 {
		t.Fatalf("%d releases after two captures, want 2", n)
	}
}

// A release that fails reaches the caller and the hook log: with the
// restore point when it was stored, joined to the error when it was not.
func TestCaptureReleaseErrorIsReported(t *testing.T) {
	ctx := context.Background()
	disk := makeDisk(t, t.TempDir(), "d.img", 1<<20, 1)
	for _, failCapture := range []bool{false, true} {
		repo, _ := newRepo(t)
		vm, _ := repo.Collection("vm")
		snap := newTestSnapshotter()
		snap.releaseErr = errors.New("lvremove: logical volume in use")
		snap.extraPath = failCapture
		rp, err := vm.Create(ctx, snapshot.CreateOptions{
			Disks:       []snapshot.DiskSource{{Name: "d", Path: disk}},
			Snapshotter: snap,
		})
		if !errors.Is(err, snapshot.ErrReleaseFailed) || !strings.Contains(err.Error(), "logical volume in use") {
			t.Fatalf("failCapture=%v: create returned %v, want the release error", failCapture, err)
		}
		points, _ := vm.List(ctx)
		if failCapture {
			if !strings.Contains(err.Error(), "2 copies for 1 disks") || rp != nil || len(points) != 0 {
				t.Errorf("a failed capture: %v, restore point %v, %d stored", err, rp, len(points))
			}
		} else {
			if rp == nil || len(points) != 1 || points[0].ID != rp.ID || !strings.Contains(err.Error(), "is stored") {
				t.Errorf("a stored restore point: %v, restore point %v, %d stored", err, rp, len(points))
			}
		}
		if n := snap.releases.Load(); n != 1 {
			t.Errorf("failCapture=%v: released %d times, want once", failCapture, n)
		}
		runs, err := hookRuns(ctx, vm)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, r := range runs {
			if r.Hook == "capture" && r.Phase == "release" && r.Outcome == "failed" && strings.Contains(r.Error, "logical volume in use") {
				found = true
			}
		}
		if !found {
			t.Errorf("failCapture=%v: the hook log lacks the failed release: %+v", failCapture, runs)
		}
	}
}

// A snapshot made after the freeze timeout whose release fails: Create
// has returned, so the failure goes to the hook log of that create.
func TestLateReleaseErrorReachesHookLog(t *testing.T) {
	ctx := context.Background()
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	disk := makeDisk(t, t.TempDir(), "d.img", 1<<20, 1)
	snap := newTestSnapshotter()
	snap.proceed = make(chan struct{})
	snap.releaseErr = errors.New("lvremove: logical volume in use")
	created := make(chan error, 1)
	go func() {
		_, err := vm.Create(ctx, snapshot.CreateOptions{
			Disks:       []snapshot.DiskSource{{Name: "d", Path: disk}},
			MaxFreeze:   50 * time.Millisecond,
			Snapshotter: snap,
		})
		created <- err
	}()
	var err error
	select {
	case err = <-created:
	case <-time.After(waitLong):
		close(snap.proceed)
		t.Fatal("create waits for a capture that ignores its context")
	}
	close(snap.proceed) // the snapshot is made now, after the create returned
	if !errors.Is(err, consistency.ErrFreezeTimeout) || errors.Is(err, snapshot.ErrReleaseFailed) {
		t.Fatalf("create: %v, want ErrFreezeTimeout alone", err)
	}
	// The capture's writer holds the repository lock until the release has
	// been logged: GC, which needs the lock exclusively, waits for that.
	if _, err := repo.GC(ctx, snapshot.GCOptions{LockWait: waitLong}); err != nil {
		t.Fatal(err)
	}
	if n := snap.releases.Load(); n != 1 {
		t.Fatalf("released %d times, want once", n)
	}
	runs, err := hookRuns(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range runs {
		if r.Hook == "capture" && r.Phase == "release" && r.Outcome == "failed" &&
			strings.Contains(r.Error, "logical volume in use") && strings.Contains(r.Error, "after the create had returned") {
			return
		}
	}
	t.Fatalf("the hook log lacks the late failed release: %+v", runs)
}
