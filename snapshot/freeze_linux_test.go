package snapshot_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/blockdiff"
	"github.com/diskpoint/diskpoint/consistency"
	"github.com/diskpoint/diskpoint/internal/systest"
	"github.com/diskpoint/diskpoint/snapshot"
)

// guestWriter keeps writing and fsyncing files in dir, as a VM's
// applications do, until stopped. Each finished write is announced on done.
type guestWriter struct {
	dir    string
	writes atomic.Int64
	done   chan struct{}
	stop   chan struct{}
	exited chan struct{}
}

func startWriter(t *testing.T, dir string) *guestWriter {
	w := &guestWriter{dir: dir, done: make(chan struct{}, 1), stop: make(chan struct{}), exited: make(chan struct{})}
	go func() {
		defer close(w.exited)
		data := make([]byte, 24<<10)
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			name := filepath.Join(dir, fmt.Sprintf("f%03d", i%200))
			copy(data, fmt.Sprintf("file %d generation %d\n", i%200, i))
			if err := writeSync(name, data); err != nil {
				return
			}
			w.writes.Add(1)
			select {
			case w.done <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() { close(w.stop); <-w.exited })
	return w
}

func writeSync(name string, data []byte) error {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Sync()
}

// awaitWrite waits for the writer's next write; the timeout only turns a
// hang (a file system left frozen) into a failure.
func (w *guestWriter) awaitWrite(t *testing.T, what string) {
	t.Helper()
	select {
	case <-w.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: the writer made no progress in 30s: is the file system still frozen?", what)
	}
}

// freezeProbe is a pause hook, so it runs inside the freeze window after the
// file systems froze: it starts a write on the frozen file system and
// records when the window closes. The write must finish after that.
type freezeProbe struct {
	consistency.FuncHook
	dir      string
	wrote    chan time.Time
	unpaused atomic.Int64 // unix nanos
}

func newFreezeProbe(dir string) *freezeProbe {
	p := &freezeProbe{dir: dir, wrote: make(chan time.Time, 1)}
	p.FuncHook = consistency.FuncHook{HookName: "freeze-probe", HookLevel: consistency.PauseLevel,
		FreezeFunc: func(context.Context) error {
			go func() {
				writeSync(filepath.Join(p.dir, "written-while-frozen"), []byte("late"))
				p.wrote <- time.Now()
			}()
			return nil
		},
		ThawFunc: func(context.Context) error { p.unpaused.Store(time.Now().UnixNano()); return nil },
	}
	return p
}

func (p *freezeProbe) check(t *testing.T) {
	t.Helper()
	select {
	case at := <-p.wrote:
		if unpaused := time.Unix(0, p.unpaused.Load()); !at.After(unpaused) {
			t.Errorf("a write finished at %s, before the window closed at %s: the file system was not frozen", at.Format(time.StampMicro), unpaused.Format(time.StampMicro))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a write started during the freeze never finished: the file system was not thawed")
	}
}

func e2fsck(t *testing.T, image string) {
	t.Helper()
	out, err := exec.Command("e2fsck", "-fn", image).CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck -fn on the restored image: %v\n%s", err, out)
	}
}

func restoreTo(t *testing.T, c *snapshot.Collection, id, disk string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), disk+".img")
	if _, err := c.RestoreDisk(context.Background(), snapshot.RestoreOptions{Point: id, Disk: disk, Path: out}); err != nil {
		t.Fatal(err)
	}
	return out
}

// An ext4 file system on a loop device, frozen by the fsfreeze hook while a
// writer keeps writing, is read while frozen (O_DIRECT), restored, and
// passes e2fsck. A second restore point holds what the file system wrote
// in between, even after the device's page cache was filled with old data.
func TestFilesystemConsistentBlockDevice(t *testing.T) {
	systest.Require(t, "mkfs.ext4", "e2fsck", "fsfreeze")
	ctx := context.Background()
	dev, mnt := systest.FileSystem(t, t.TempDir(), "ext4", 64<<20)
	writer := startWriter(t, mnt)
	writer.awaitWrite(t, "before the first restore point")
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	probe := newFreezeProbe(mnt)
	opts := snapshot.CreateOptions{
		Disks:       []snapshot.DiskSource{{Name: "root", Path: dev}},
		Consistency: consistency.FileSystem,
		Hooks:       []consistency.Hook{&consistency.FSFreezeHook{MountPoints: []string{mnt}}, probe},
		MaxFreeze:   time.Minute,
	}
	rp, err := vm.Create(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	probe.check(t)
	writer.awaitWrite(t, "after the thaw")
	d := rp.Disks[0]
	if rp.Consistency != "filesystem" || d.Capture != "read-frozen" || rp.FreezeMillis <= 0 {
		t.Errorf("restore point: consistency %q, capture %q, freeze %d ms", rp.Consistency, d.Capture, rp.FreezeMillis)
	}
	e2fsck(t, restoreTo(t, vm, rp.ID, "root"))

	// Fill the device's page cache with its current blocks, then write a
	// marker through the file system, around that cache.
	dump, _ := os.Open(dev)
	io.Copy(io.Discard, dump)
	dump.Close()
	marker := fmt.Sprintf("written at %d", time.Now().UnixNano())
	if err := writeSync(filepath.Join(mnt, "marker"), []byte(marker)); err != nil {
		t.Fatal(err)
	}
	opts.Hooks[1] = newFreezeProbe(mnt)
	rp2, err := vm.Create(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	restored := restoreTo(t, vm, rp2.ID, "root")
	e2fsck(t, restored)
	got := systest.Run(t, "debugfs", "-R", "cat /marker", restored)
	if !strings.Contains(got, marker) {
		t.Fatalf("the restored file system lacks what was written before the restore point: /marker = %q, want %q", got, marker)
	}
}

// The realistic VM case: the guest's ext4 lives in an image file on the
// host's XFS, which can reflink. The guest file system is frozen, the image
// cloned (metadata only: a short window), thawed, and the clone read.
func TestFilesystemConsistentReflinkCapture(t *testing.T) {
	systest.Require(t, "mkfs.ext4", "mkfs.xfs", "e2fsck", "fsfreeze", "debugfs")
	ctx := context.Background()
	_, host := systest.FileSystem(t, t.TempDir(), "xfs", 512<<20)
	guestImage := systest.Sparse(t, filepath.Join(host, "guest.img"), 96<<20)
	systest.Run(t, "mkfs.ext4", "-q", guestImage)
	guest := systest.Mount(t, systest.Loop(t, guestImage))
	writer := startWriter(t, guest)
	writer.awaitWrite(t, "before the restore point")

	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	probe := newFreezeProbe(guest)
	rp, err := vm.Create(ctx, snapshot.CreateOptions{
		Disks:       []snapshot.DiskSource{{Name: "root", Path: guestImage}},
		Consistency: consistency.FileSystem,
		Hooks:       []consistency.Hook{&consistency.FSFreezeHook{MountPoints: []string{guest}}, probe},
		MaxFreeze:   time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	probe.check(t)
	writer.awaitWrite(t, "after the thaw")
	if d := rp.Disks[0]; d.Capture != "reflink" || rp.Consistency != "filesystem" {
		t.Fatalf("capture %q, consistency %q; want a reflink capture, file-system consistent", d.Capture, rp.Consistency)
	}
	t.Logf("freeze window with a reflink capture: %d ms", rp.FreezeMillis)
	e2fsck(t, restoreTo(t, vm, rp.ID, "root"))
	leftovers, _ := filepath.Glob(filepath.Join(host, ".guest.img.diskpoint-capture-*"))
	if len(leftovers) != 0 {
		t.Errorf("clones left behind: %v", leftovers)
	}
}

// Two images on XFS, written by one "VM" that a pause hook stops: reflink
// captures them at one instant.
func TestReflinkCapturesDisksAtOneInstant(t *testing.T) {
	systest.Require(t, "mkfs.xfs")
	_, host := systest.FileSystem(t, t.TempDir(), "xfs", 512<<20)
	ids, vm := captureCounterDisks(t, host, 5)
	for _, id := range ids {
		rp, _ := vm.Get(context.Background(), id)
		for _, d := range rp.Disks {
			if d.Capture != "reflink" {
				t.Errorf("restore point %s disk %s captured by %q, want reflink", id, d.Name, d.Capture)
			}
		}
	}
}

// hangingSnapshotter never returns from Snapshot (or panics): the watchdog
// must thaw anyway.
type hangingSnapshotter struct {
	panics  bool
	release chan struct{}
}

func (h hangingSnapshotter) Snapshot(ctx context.Context, _ []string) (blockdiff.Snapshot, error) {
	if h.panics {
		panic("snapshotter crashed")
	}
	<-h.release // ignores ctx on purpose
	return nil, errors.New("released")
}

// A capture that hangs or panics while a real ext4 is frozen still thaws
// it within the maximum freeze time.
func TestRealFreezeAlwaysThaws(t *testing.T) {
	systest.Require(t, "mkfs.ext4", "fsfreeze")
	for _, panics := range []bool{false, true} {
		t.Run(fmt.Sprintf("panics=%v", panics), func(t *testing.T) {
			ctx := context.Background()
			dev, mnt := systest.FileSystem(t, t.TempDir(), "ext4", 32<<20)
			repo, _ := newRepo(t)
			vm, _ := repo.Collection("vm")
			release := make(chan struct{})
			defer close(release)
			probe := newFreezeProbe(mnt)
			start := time.Now()
			_, err := vm.Create(ctx, snapshot.CreateOptions{
				Disks:       []snapshot.DiskSource{{Name: "root", Path: dev}},
				Consistency: consistency.FileSystem,
				Hooks:       []consistency.Hook{&consistency.FSFreezeHook{MountPoints: []string{mnt}}, probe},
				MaxFreeze:   500 * time.Millisecond,
				Snapshotter: hangingSnapshotter{panics: panics, release: release},
			})
			want := "overran the maximum freeze time"
			if panics {
				want = "snapshotter crashed"
			}
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("got %v, want an error saying %q", err, want)
			}
			probe.check(t) // the write blocked by the freeze went through
			if took := time.Since(start); !panics && took > 20*time.Second {
				t.Errorf("create returned after %s with a 500ms maximum freeze", took)
			}
			// Not frozen any more: freezing again works (EBUSY if still frozen).
			h := &consistency.FSFreezeHook{MountPoints: []string{mnt}}
			if err := h.Freeze(ctx, &consistency.Run{}); err != nil {
				t.Fatalf("the file system is still frozen: %v", err)
			}
			if err := h.Thaw(ctx, &consistency.Run{}); err != nil {
				t.Fatal(err)
			}
			if points, _ := vm.List(ctx); len(points) != 0 {
				t.Errorf("a failed capture stored %d restore points", len(points))
			}
		})
	}
}
