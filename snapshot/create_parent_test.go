package snapshot_test

import (
	"bytes"
	"context"
	"sync"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

// beforeWriterLock runs a function once it is armed, just before a
// create's writer lock (operation "create vm") is first written.
type beforeWriterLock struct {
	chain.Store
	mu  sync.Mutex
	run func()
}

func (s *beforeWriterLock) arm(run func()) {
	s.mu.Lock()
	s.run = run
	s.mu.Unlock()
}

func (s *beforeWriterLock) PutIfAbsent(ctx context.Context, name string, data []byte) error {
	if bytes.Contains(data, []byte(`"operation":"create vm"`)) {
		s.mu.Lock()
		run := s.run
		s.run = nil
		s.mu.Unlock()
		if run != nil {
			run()
		}
	}
	return s.Store.PutIfAbsent(ctx, name, data)
}

// A create chooses its parent only once its writer lock is visible: if the
// parent is deleted and collected by another process just before, the
// create reads the disk in full, rather than reusing block-map nodes and
// chunks that GC has just removed.
func TestCreateWhoseParentIsCollectedMeanwhile(t *testing.T) {
	ctx := context.Background()
	store := &beforeWriterLock{Store: chain.NewMemStore()}
	repo, err := snapshot.InitStore(ctx, store, snapshot.InitOptions{Format: testFormat()})
	if err != nil {
		t.Fatal(err)
	}
	vm, _ := repo.Collection("vm")
	disk := makeDisk(t, t.TempDir(), "d.img", 4<<20, 5)
	parent, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := demodisk.Scatter(disk, 0.1, 6); err != nil {
		t.Fatal(err)
	}
	var gc chain.GCReport
	store.arm(func() {
		other, err := snapshot.OpenStore(ctx, store.Store, nil)
		if err != nil {
			t.Error(err)
			return
		}
		otherVM, _ := other.Collection("vm")
		if err := otherVM.Delete(ctx, parent.ID); err != nil {
			t.Error(err)
		}
		if gc, err = other.GC(ctx, snapshot.GCOptions{}); err != nil {
			t.Error(err)
		}
	})
	rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}})
	if err != nil {
		t.Fatalf("create after its parent was collected (GC: %+v): %v", gc, err)
	}
	if gc.BlobsRemoved == 0 {
		t.Fatalf("the GC beside the create removed nothing (%+v): the test did not race", gc)
	}
	if p := rp.Disks[0].Parent; p != "" {
		t.Errorf("the create names %s, deleted and collected before its lock, as its parent", p)
	}
	restoreAndCompare(t, vm, rp.ID, "d", readFile(t, disk))
}
