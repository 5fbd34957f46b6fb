package snapshot_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/chain/storetest"
	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

// errLostAnswer is a transient failure whose call may have happened: a
// remote store that timed out after doing the work.
var errLostAnswer = fmt.Errorf("503 service unavailable: %w", chain.ErrTransient)

// Every operation run against a store that fails at random (EIO, or an
// answer lost after the call did its work) ends in success or in a clean
// failure: none reports damage that is not there, nothing half committed
// is left, and once the store is well again verify is clean, every point a
// create reported restores bit-exact, and every point listed holds a state
// its disk really had. The source and the target of copies both fail.
func TestOperationsAgainstAFailingStoreFailCleanly(t *testing.T) {
	seeds := 8
	if testing.Short() {
		seeds = 4
	}
	hits := 0
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { hits += faultRun(t, seed) })
	}
	if hits == 0 {
		t.Fatal("no fault was injected: the runs show nothing")
	}
}

// faultRun is one seeded run of creates, restores, copies, deletes and GCs
// against failing stores, then the checks on the healed stores. It returns
// how many faults were injected.
func faultRun(t *testing.T, seed uint64) (hits int) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, 99))
	work := t.TempDir()
	disk := filepath.Join(work, "d.img")
	if err := demodisk.Create(disk, 2<<20, seed, demodisk.MixedImage); err != nil {
		t.Fatal(err)
	}

	// From rare faults, where most operations succeed, to frequent ones,
	// where most fail part way.
	chance := []float64{0.001, 0.003, 0.01, 0.03}[seed%4]
	var stores [2]*storetest.FaultStore
	var mems [2]chain.Store
	var repos [2]*snapshot.Repository
	for i := range stores {
		mems[i] = chain.NewMemStore()
		if _, err := snapshot.InitStore(ctx, mems[i], snapshot.InitOptions{BlockSize: testBlockSize, Format: testFormat()}); err != nil {
			t.Fatal(err)
		}
		stores[i] = storetest.NewFaultStore(mems[i], seed*2+uint64(i))
		stores[i].Inject(storetest.Fault{Chance: chance, Err: syscall.EIO})
		stores[i].Inject(storetest.Fault{Chance: chance, Err: errLostAnswer, After: true})
	}
	// open opens repository i through its failing store; opening fails
	// too, now and then, and is tried again as a caller would.
	open := func(i int) *snapshot.Repository {
		for range 100 {
			repo, err := snapshot.OpenStore(ctx, stores[i], nil)
			if err == nil {
				return repo
			}
			checkClean(t, "open", err)
		}
		t.Fatalf("repository %d never opened", i)
		return nil
	}

	states := map[[32]byte]bool{}     // every state the disk was in at a create
	reported := map[string][32]byte{} // points a create reported, by ID, with their state
	copied := map[string][32]byte{}   // points a copy reported, by ID
	mayBeGone := map[string]bool{}    // points a delete was tried on
	for step := range 40 {
		repos[0], repos[1] = open(0), open(1)
		src, _ := repos[0].Collection("vm")
		dst, _ := repos[1].Collection("vm")
		switch op := rng.IntN(10); {
		case op < 4: // create
			if _, err := demodisk.Scatter(disk, 0.05, seed*1000+uint64(step)); err != nil {
				t.Fatal(err)
			}
			state := sha256.Sum256(readFile(t, disk))
			states[state] = true
			rp, err := src.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}})
			if checkClean(t, "create", err) {
				reported[rp.ID] = state
			}
		case op < 6: // restore a reported point
			id, state, ok := pick(rng, reported, mayBeGone)
			if !ok {
				continue
			}
			out := filepath.Join(work, "restored.img")
			_, err := src.RestoreDisk(ctx, snapshot.RestoreOptions{Point: id, Disk: "d", Path: out})
			if checkClean(t, "restore "+id, err) {
				if got := sha256.Sum256(readFile(t, out)); got != state {
					t.Fatalf("restore %s reported success with the wrong contents", id)
				}
			}
			os.Remove(out)
		case op < 7: // copy a reported point to the other repository
			id, state, ok := pick(rng, reported, mayBeGone)
			if !ok {
				continue
			}
			_, _, err := src.Copy(ctx, id, dst, snapshot.CopyOptions{})
			// Already there: an earlier copy stored it, answered or not.
			if errors.Is(err, snapshot.ErrExists) || checkClean(t, "copy "+id, err) {
				copied[id] = state
			}
		case op < 8: // delete
			id, _, ok := pick(rng, reported, mayBeGone)
			if !ok {
				continue
			}
			mayBeGone[id] = true
			checkClean(t, "delete "+id, src.Delete(ctx, id))
		case op < 9:
			_, err := repos[0].GC(ctx, snapshot.GCOptions{RepackUnused: 0.01})
			checkClean(t, "gc", err)
		default:
			report, err := repos[0].Verify(ctx, snapshot.VerifyOptions{})
			if checkClean(t, "verify", err) && !report.OK() {
				t.Fatalf("verify against a failing (not damaged) store reports damage: %+v", report.Damage)
			}
		}
	}

	for _, s := range stores {
		hits += s.Hits()
	}

	// The stores are well again. A process that died mid-operation leaves
	// its lock to go stale; nothing runs now, so all locks go.
	for i := range stores {
		stores[i].Clear()
		repo, err := snapshot.OpenStore(ctx, mems[i], nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := repo.Unlock(ctx, true); err != nil {
			t.Fatal(err)
		}
		if _, err := repo.GC(ctx, snapshot.GCOptions{RepackUnused: 0.01}); err != nil {
			t.Fatalf("repository %d: gc once the store is well: %v", i, err)
		}
		report, err := repo.Verify(ctx, snapshot.VerifyOptions{})
		if err != nil || !report.OK() {
			t.Fatalf("repository %d: verify once the store is well: %+v, %v", i, report.Damage, err)
		}
		want := reported
		if i == 1 {
			want = copied
		}
		c, _ := repo.Collection("vm")
		points, err := c.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		listed := map[string]bool{}
		for _, rp := range points {
			listed[rp.ID] = true
			out := filepath.Join(work, "final.img")
			if _, err := c.RestoreDisk(ctx, snapshot.RestoreOptions{Point: rp.ID, Disk: "d", Path: out}); err != nil {
				t.Fatalf("repository %d: restore %s once the store is well: %v", i, rp.ID, err)
			}
			got := sha256.Sum256(readFile(t, out))
			os.Remove(out)
			if !states[got] {
				t.Fatalf("repository %d: point %s holds a state the disk never had", i, rp.ID)
			}
			if state, ok := want[rp.ID]; ok && state != got {
				t.Fatalf("repository %d: point %s holds another state than its create saw", i, rp.ID)
			}
		}
		for id := range want {
			if !listed[id] && !mayBeGone[id] {
				t.Fatalf("repository %d: point %s was reported stored and is gone", i, id)
			}
		}
	}
	t.Logf("seed %d: %d faults, %d points reported, %d copied", seed, hits, len(reported), len(copied))
	return hits
}

// checkClean reports whether an operation succeeded; a failure must be the
// injected one, never reported as damage.
func checkClean(t *testing.T, op string, err error) bool {
	t.Helper()
	switch {
	case err == nil:
		return true
	case errors.Is(err, chain.ErrCorrupt):
		t.Fatalf("%s against a failing (not damaged) store: %v", op, err)
	case !errors.Is(err, syscall.EIO) && !errors.Is(err, chain.ErrTransient):
		t.Fatalf("%s failed for another reason than the store's failure: %v", op, err)
	}
	return false
}

// pick returns a reported point not yet deleted, at random.
func pick(rng *rand.Rand, points map[string][32]byte, gone map[string]bool) (string, [32]byte, bool) {
	var ids []string
	for id := range points {
		if !gone[id] {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return "", [32]byte{}, false
	}
	slices.Sort(ids) // map order would make the run unrepeatable
	id := ids[rng.IntN(len(ids))]
	return id, points[id], true
}
