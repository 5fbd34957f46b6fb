package snapshot_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/consistency"
	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

// thawGate is a store whose pack writes wait until its file-system hook
// has been thawed: a create that stores inside the freeze window waits
// there for them until MaxFreeze. At the first pack write after the thaw
// it runs afterThaw, whose error fails that write.
type thawGate struct {
	chain.Store
	thawed    chan struct{}
	thawOnce  sync.Once
	early     atomic.Int64 // pack writes that came before the thaw
	afterOnce sync.Once
	afterThaw func(ctx context.Context) error
}

// localThawGate is a thawGate over a local directory, which it names the
// way chain.LocalStore does: a create puts its spool file beside it.
type localThawGate struct{ *thawGate }

func (g localThawGate) Root() string { return g.Store.(*chain.LocalStore).Root() }

func (g *thawGate) Put(ctx context.Context, name string, data []byte) error {
	if strings.HasPrefix(name, "packs/") {
		select {
		case <-g.thawed:
		default:
			g.early.Add(1)
			select {
			case <-g.thawed:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		var err error
		g.afterOnce.Do(func() {
			if g.afterThaw != nil {
				err = g.afterThaw(ctx)
			}
		})
		if err != nil {
			return err
		}
	}
	return g.Store.Put(ctx, name, data)
}

// hook is the file-system hook whose thaw opens the gate.
func (g *thawGate) hook() consistency.Hook {
	return &consistency.FuncHook{HookName: "fs", HookLevel: consistency.FileSystemLevel, ThawFunc: func(context.Context) error {
		g.thawOnce.Do(func() { close(g.thawed) })
		return nil
	}}
}

// newThawGatedRepo makes a repository in a thawGate over store (wrapped
// so that it reads as local when local), with 1 MiB packs, so that a few
// MiB of blocks fill several packs.
func newThawGatedRepo(t *testing.T, store chain.Store, local bool) (*thawGate, *snapshot.Collection) {
	t.Helper()
	ctx := context.Background()
	gate := &thawGate{Store: store, thawed: make(chan struct{})}
	var gated chain.Store = gate
	if local {
		gated = localThawGate{gate}
	}
	cfg, err := chain.NewConfig(testBlockSize)
	if err != nil {
		t.Fatal(err)
	}
	cfg.PackSize = 1 << 20
	if _, err := chain.Init(ctx, gated, cfg, nil); err != nil {
		t.Fatal(err)
	}
	repo, err := snapshot.OpenStore(ctx, gated, nil)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := repo.Collection("vm")
	if err != nil {
		t.Fatal(err)
	}
	return gate, vm
}

// rearm readies the gate for another create.
func (g *thawGate) rearm(afterThaw func(ctx context.Context) error) {
	g.thawed, g.thawOnce, g.afterOnce, g.afterThaw = make(chan struct{}), sync.Once{}, sync.Once{}, afterThaw
}

// createWithin runs Create and fails the test if it has not returned
// within a minute, rather than hang.
func createWithin(t *testing.T, ctx context.Context, vm *snapshot.Collection, opts snapshot.CreateOptions) (*snapshot.RestorePoint, error) {
	t.Helper()
	type result struct {
		rp  *snapshot.RestorePoint
		err error
	}
	done := make(chan result, 1)
	go func() {
		rp, err := vm.Create(ctx, opts)
		done <- result{rp, err}
	}()
	select {
	case r := <-done:
		return r.rp, r.err
	case <-time.After(time.Minute):
		t.Fatal("create has not returned after a minute")
		return nil, nil
	}
}

// Inside the freeze window a disk read while held still is only read,
// hashed and spooled: no pack is written before the hooks have thawed, so
// a store whose pack writes wait for the thaw does not keep the create
// inside the window. Compressing and storing come after the thaw, for a
// first restore point and for an incremental one alike, and the restore
// points restore bit-exact.
func TestStoringWaitsForTheThaw(t *testing.T) {
	ctx := context.Background()
	gate, vm := newThawGatedRepo(t, chain.NewMemStore(), false)
	disk := makeDisk(t, noReflinkDir(t), "d.img", 16<<20, 7)
	for i, step := range []string{"first", "incremental"} {
		if i > 0 {
			if _, err := demodisk.Scatter(disk, 0.2, 8); err != nil {
				t.Fatal(err)
			}
			gate.rearm(nil)
		}
		want := readFile(t, disk)
		rp, err := createWithin(t, ctx, vm, snapshot.CreateOptions{
			Disks:       []snapshot.DiskSource{{Name: "d", Path: disk}},
			Consistency: consistency.FileSystem,
			Hooks:       []consistency.Hook{gate.hook()},
			MaxFreeze:   5 * time.Second,
		})
		if err != nil {
			t.Fatalf("%s create, with pack writes waiting for the thaw: %v", step, err)
		}
		if n := gate.early.Swap(0); n > 0 {
			t.Errorf("%s create: %d pack writes came inside the freeze window", step, n)
		}
		if d := rp.Disks[0]; d.Capture != "read-frozen" || rp.Consistency != "filesystem" || d.NewChunkBytes == 0 {
			t.Errorf("%s create: capture %q, consistency %q, %d bytes of new chunks", step, d.Capture, rp.Consistency, d.NewChunkBytes)
		}
		restoreAndCompare(t, vm, rp.ID, "d", want)
	}
}

// What is stored after the thaw is what was read inside the window: a disk
// written after the thaw, while its blocks are being stored, changes
// nothing in the restore point, whether the spool holds them in memory or
// in its file.
func TestDiskWrittenWhileStoringIsStoredAsRead(t *testing.T) {
	for _, tc := range []struct {
		name   string
		memory int64
	}{{"spool in memory", 0}, {"spool in a file", 64 << 10}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			gate, vm := newThawGatedRepo(t, chain.NewMemStore(), false)
			disk := makeDisk(t, noReflinkDir(t), "d.img", 8<<20, 9)
			want := readFile(t, disk)
			gate.afterThaw = func(context.Context) error {
				_, err := demodisk.Scatter(disk, 0.5, 10)
				return err
			}
			rp, err := createWithin(t, ctx, vm, snapshot.CreateOptions{
				Disks:       []snapshot.DiskSource{{Name: "d", Path: disk}},
				Consistency: consistency.FileSystem,
				Hooks:       []consistency.Hook{gate.hook()},
				MaxFreeze:   5 * time.Second,
				SpoolMemory: tc.memory,
			})
			if err != nil {
				t.Fatalf("create, with the disk written while storing: %v", err)
			}
			if string(readFile(t, disk)) == string(want) {
				t.Fatal("the disk was not written while the create stored it: the test proves nothing")
			}
			restoreAndCompare(t, vm, rp.ID, "d", want)
		})
	}
}

// zeroFirstSegment writes zeros over the first block-map segment of the
// disk at path (256 blocks of testBlockSize), so that its block IDs are all
// zeros.
func zeroFirstSegment(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, chain.DefaultTreeFanout*testBlockSize), 0); err != nil {
		t.Fatal(err)
	}
}

// A create that spools stores exactly what one that stores as it reads
// does: the same block maps (so the same blocks, by ID), the same bytes
// stored, for a first restore point and an incremental one, with blocks
// that two disks share, a segment of zeros, and most of the spool in its
// file.
func TestSpooledCaptureStoresWhatADirectOneDoes(t *testing.T) {
	ctx := context.Background()
	dir := noReflinkDir(t)
	a := makeDisk(t, dir, "a.img", 6<<20, 11)
	zeroFirstSegment(t, a)
	b := filepath.Join(dir, "b.img")
	copyFile(t, a, b)
	if _, err := demodisk.Scatter(b, 0.3, 12); err != nil {
		t.Fatal(err)
	}
	disks := []snapshot.DiskSource{{Name: "a", Path: a}, {Name: "b", Path: b}}
	spooledRepo, _ := newRepo(t)
	directRepo, _ := newRepo(t)
	spooled, _ := spooledRepo.Collection("vm")
	direct, _ := directRepo.Collection("vm")
	for round := range 2 {
		if round > 0 {
			for i, d := range disks {
				if _, err := demodisk.Scatter(d.Path, 0.1, uint64(20+i)); err != nil {
					t.Fatal(err)
				}
			}
		}
		got, err := spooled.Create(ctx, snapshot.CreateOptions{
			Disks: disks, Consistency: consistency.FileSystem, SpoolMemory: 64 << 10,
			Hooks: []consistency.Hook{newCounted("fs", consistency.FileSystemLevel)},
		})
		if err != nil {
			t.Fatal(err)
		}
		want, err := direct.Create(ctx, snapshot.CreateOptions{Disks: disks}) // read as it is, stored as read
		if err != nil {
			t.Fatal(err)
		}
		var gotTotal, wantTotal [3]int64
		for i := range disks {
			g, w := got.Disks[i], want.Disks[i]
			if g.Capture != "read-frozen" || w.Capture != "read" {
				t.Fatalf("round %d: captures %q and %q", round, g.Capture, w.Capture)
			}
			if g.Root != w.Root || g.Size != w.Size || g.ChangedBytes != w.ChangedBytes || (g.Parent == "") != (w.Parent == "") {
				t.Errorf("round %d, disk %s: spooled %+v, direct %+v", round, g.Name, g, w)
			}
			// Which disk stores a block both hold depends on which gets
			// there first: compare the totals.
			gotTotal = [3]int64{gotTotal[0] + g.StoredBytes, gotTotal[1] + g.NewChunkBytes, gotTotal[2] + g.MetadataBytes}
			wantTotal = [3]int64{wantTotal[0] + w.StoredBytes, wantTotal[1] + w.NewChunkBytes, wantTotal[2] + w.MetadataBytes}
			restoreAndCompare(t, spooled, got.ID, g.Name, readFile(t, disks[i].Path))
		}
		if gotTotal != wantTotal {
			t.Errorf("round %d: stored, new chunk and metadata bytes %v spooled, %v direct", round, gotTotal, wantTotal)
		}
	}
}
