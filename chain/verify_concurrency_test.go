package chain_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
)

// createPoint stores one restore point of one disk of the given blocks
// through a new writer of repo, as a create does.
func createPoint(ctx context.Context, repo *chain.Repository, collection, id string, blocks []chain.ID, data map[chain.ID][]byte) error {
	w, err := repo.NewWriterWait(ctx, "create", time.Minute)
	if err != nil {
		return err
	}
	defer w.Close()
	cfg := repo.Config()
	g := chain.Geometry{Size: int64(len(blocks)) * int64(cfg.BlockSize), BlockSize: cfg.BlockSize, Fanout: cfg.TreeFanout}
	b := chain.NewTreeBuilder(w, g)
	for j := int64(0); j < g.Leaves(); j++ {
		leaf := blocks[j*int64(g.Fanout) : j*int64(g.Fanout)+int64(g.LeafBlocks(j))]
		for _, id := range leaf {
			if id.IsZero() {
				continue
			}
			if _, err := w.PutBlob(ctx, chain.DataBlob, id, data[id]); err != nil {
				return err
			}
		}
		if err := b.AddLeaf(ctx, leaf); err != nil {
			return err
		}
	}
	root, err := b.Finish(ctx)
	if err != nil {
		return err
	}
	d := chain.DiskManifest{Name: "disk", Size: g.Size, BlockSize: cfg.BlockSize, Root: root}
	return w.SaveManifest(ctx, manifest(collection, id, d))
}

// Verify runs in a loop beside creates (in its own process's repository and
// in another's sharing the store) and GC: it must neither crash the process
// (it once iterated the index that writers add to) nor report damage that is
// not there (it once loaded the index before listing the restore points, so
// points committed in between had "missing" blobs).
func TestVerifyBesideCreatesAndGC(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	repo := newRepo(t)
	other, err := chain.Open(ctx, repo.Store(), nil) // another process on the same repository
	if err != nil {
		t.Fatal(err)
	}
	const (
		runFor     = 3 * time.Second // at most; it ends once it has done enough of each
		enough     = 100
		keepPoints = 3  // per collection, the rest deleted before each GC
		gcEvery    = 10 // creates per collection between GCs
	)
	shared, sharedData := randomBlocks(rand.New(rand.NewPCG(1, 1)), 24, 0) // in every point: dedup

	var (
		wg                        sync.WaitGroup
		mu                        sync.Mutex
		failures                  []string
		creates, verifies, gcRuns atomic.Int64
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
		cancel()
	}
	// Shared locks taken back to back would keep GC out for good: creators
	// wait for a GC every gcEvery creates.
	gcDone, gcStopped := make(chan struct{}), make(chan struct{})
	nextGC := func() chan struct{} { mu.Lock(); defer mu.Unlock(); return gcDone }
	// It runs for runFor, or until it has done enough of each; past runFor
	// it goes on (up to a minute more, on a loaded machine) until it has
	// done each at least once.
	deadline, last := time.Now().Add(runFor), time.Now().Add(runFor+time.Minute)
	running := func() bool {
		done := verifies.Load() >= enough && creates.Load() >= enough && gcRuns.Load() >= enough/10
		once := verifies.Load() > 0 && creates.Load() > 0 && gcRuns.Load() > 0
		return ctx.Err() == nil && !done && (time.Now().Before(deadline) || !once && time.Now().Before(last))
	}

	for i, r := range []*chain.Repository{repo, other} {
		collection := fmt.Sprintf("vm%d", i)
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i+2), 7))
			for n := 0; running(); n++ {
				fresh, data := randomBlocks(rng, 40, 5)
				for id, b := range sharedData {
					data[id] = b
				}
				blocks := append(fresh, shared...)
				if err := createPoint(ctx, r, collection, fmt.Sprintf("p%05d", n), blocks, data); err != nil {
					if ctx.Err() == nil {
						fail("create %s/p%05d: %v", collection, n, err)
					}
					return
				}
				creates.Add(1)
				if n%gcEvery == gcEvery-1 {
					select {
					case <-nextGC():
					case <-gcStopped:
					}
				}
			}
		})
	}
	wg.Go(func() {
		defer close(gcStopped)
		for running() {
			for _, c := range []string{"vm0", "vm1"} {
				ms, err := repo.ListManifests(ctx, c)
				if err != nil {
					fail("list %s: %v", c, err)
					return
				}
				for _, m := range ms[:max(0, len(ms)-keepPoints)] {
					if err := repo.DeleteManifest(ctx, c, m.ID); err != nil {
						fail("delete %s/%s: %v", c, m.ID, err)
						return
					}
				}
			}
			if _, err := repo.GC(ctx, chain.GCOptions{LockWait: time.Minute}); err != nil {
				if ctx.Err() == nil {
					fail("gc: %v", err)
				}
				return
			}
			gcRuns.Add(1)
			mu.Lock()
			close(gcDone)
			gcDone = make(chan struct{})
			mu.Unlock()
		}
	})
	wg.Go(func() {
		for running() {
			report, err := repo.Verify(ctx, chain.VerifyOptions{})
			if errors.Is(err, chain.ErrLocked) {
				continue // the other process's GC holds the repository
			}
			if err != nil {
				if ctx.Err() == nil {
					fail("verify: %v", err)
				}
				return
			}
			n := verifies.Add(1)
			if !report.OK() { // and go on: the next verifies may crash the process
				mu.Lock()
				failures = append(failures, fmt.Sprintf("verify %d beside creates reports damage: %+v", n, report.Damage))
				mu.Unlock()
			}
		}
	})
	wg.Wait()
	for i, f := range failures {
		if i == 3 {
			t.Errorf("and %d more", len(failures)-i)
			break
		}
		t.Error(f)
	}
	if t.Failed() {
		return
	}
	t.Logf("%d creates, %d verifies, %d GCs", creates.Load(), verifies.Load(), gcRuns.Load())
	if creates.Load() == 0 || verifies.Load() == 0 || gcRuns.Load() == 0 {
		t.Fatalf("the loop did not exercise everything: %d creates, %d verifies, %d GCs", creates.Load(), verifies.Load(), gcRuns.Load())
	}
	ctx = context.Background()
	report, err := repo.Verify(ctx, chain.VerifyOptions{})
	if err != nil || !report.OK() {
		t.Fatalf("verify at the end: %+v, %v", report, err)
	}
	reader, err := chain.Open(ctx, repo.Store(), nil) // with an index that has the other process's blobs
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"vm0", "vm1"} {
		ms, err := reader.ListManifests(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if err := readAll(t, reader, m); err != nil {
				t.Errorf("restore point %s/%s: %v", c, m.ID, err)
			}
		}
	}
}
