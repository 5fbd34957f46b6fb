package snapshot_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/chain/storetest"
	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

// errCrashed is what a crashStore answers once it has "crashed".
var errCrashed = errors.New("the process crashed here")

// crashStore stops writing, as a process that crashed would, at its at-th
// mutating call (Put, PutIfAbsent, Delete): that call and every later one
// fail and change nothing. Lock objects are spared, so that the crashed
// run's lock is released as `diskpoint unlock` would release it.
type crashStore struct {
	chain.Store
	at int

	mu    sync.Mutex
	calls int // mutating calls of objects that are not locks
}

func (s *crashStore) mutate(name string, call func() error) error {
	if strings.HasPrefix(name, "locks/") {
		return call()
	}
	s.mu.Lock()
	s.calls++
	crashed := s.calls >= s.at
	s.mu.Unlock()
	if crashed {
		return fmt.Errorf("%s: %w", name, errCrashed)
	}
	return call()
}

func (s *crashStore) Put(ctx context.Context, name string, data []byte) error {
	return s.mutate(name, func() error { return s.Store.Put(ctx, name, data) })
}

func (s *crashStore) PutIfAbsent(ctx context.Context, name string, data []byte) error {
	return s.mutate(name, func() error { return s.Store.PutIfAbsent(ctx, name, data) })
}

func (s *crashStore) Delete(ctx context.Context, name string) error {
	return s.mutate(name, func() error { return s.Store.Delete(ctx, name) })
}

// migrateCrashingAt runs Migrate over store, crashing at mutating call
// at; it reports whether the run got that far.
func migrateCrashingAt(t *testing.T, store chain.Store, at int) (crashed bool) {
	t.Helper()
	cs := &crashStore{Store: store, at: at}
	repo, err := snapshot.OpenStore(context.Background(), cs, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = repo.Migrate(context.Background(), snapshot.MigrateOptions{})
	if err != nil && !errors.Is(err, errCrashed) {
		t.Fatalf("migrate crashing at call %d failed otherwise: %v", at, err)
	}
	return err != nil
}

// checkWhole opens store afresh and checks that it is the version its
// config says, with that version's index files, restores every point of
// the fixture bit-exact, and verifies with no damage but the other
// version's index files (which it takes for damaged ones).
func checkWhole(t *testing.T, store chain.Store, when string) int {
	t.Helper()
	repo, err := snapshot.OpenStore(context.Background(), store, nil)
	if err != nil {
		t.Fatalf("%s: open: %v", when, err)
	}
	version := repo.Config().Version
	counts := indexFileVersions(t, store)
	switch {
	case version != storedVersion(t, store):
		t.Fatalf("%s: opened as version %d, the config says %d", when, version, storedVersion(t, store))
	case version == chain.FormatVersion && counts["dpi1"] != len(fixtureIndexFiles(t, v1FixtureDir)):
		t.Fatalf("%s: version 1 with index files %v: a version 1 file is gone before the switch", when, counts)
	case version == chain.FormatVersion2 && counts["dpi2"] == 0:
		t.Fatalf("%s: version 2 with no version 2 index file: %v", when, counts)
	}
	checkListsFixture(t, repo)
	checkRestoresFixture(t, repo, when)
	// Verify may report the other version's index files, which this
	// version cannot read, and nothing else: no restore point is hurt.
	foreign := map[int]string{chain.FormatVersion: "dpi2", chain.FormatVersion2: "dpi1"}[version]
	report, err := repo.Verify(context.Background(), snapshot.VerifyOptions{StructureOnly: true})
	if err != nil {
		t.Fatalf("%s: verify: %v", when, err)
	}
	for _, d := range report.Damage {
		data, err := store.Get(context.Background(), "index/"+d.ID)
		if d.Kind != "index" || err != nil || !strings.HasPrefix(string(data), foreign) || len(d.RestorePoints) != 0 {
			t.Fatalf("%s: verify reports %+v: only the version %d index files may be, and hurting no point", when, d, 3-version)
		}
	}
	if len(report.Damage) != counts[foreign] {
		t.Fatalf("%s: verify reports %d damaged objects, there are %d index files of the other version", when, len(report.Damage), counts[foreign])
	}
	return version
}

// Migrate interrupted at every one of its writes and deletes, and its
// rerun interrupted at the same step again, leaves a repository that is
// whole as the version its config says; the final rerun finishes it: the
// repository is version 2, with no version 1 index file, and verifies
// clean. A GC run over what the interruption left, instead of the rerun,
// removes the other version's index files and loses nothing.
func TestMigrateCrashAtEveryStepThenRerun(t *testing.T) {
	ctx := context.Background()
	versions := map[int]int{} // what the interrupted runs left
	steps := 0
	for at := 1; ; at++ {
		store := chain.NewMemStore()
		loadV1FixtureInto(t, store)
		if !migrateCrashingAt(t, store, at) {
			steps = at - 1
			break
		}
		when := fmt.Sprintf("crashed at step %d", at)
		leftV2 := indexFileVersions(t, store)["dpi2"]
		versions[checkWhole(t, store, when)]++
		checkGCAfterCrash(t, storetest.Clone(t, store), when)
		migrateCrashingAt(t, store, at)
		checkWhole(t, store, when+", and its rerun too")

		repo, err := snapshot.OpenStore(ctx, store, nil)
		if err != nil {
			t.Fatal(err)
		}
		report, err := repo.Migrate(ctx, snapshot.MigrateOptions{})
		if err != nil {
			t.Fatalf("%s: the final rerun: %v", when, err)
		}
		if storedVersion(t, store) != chain.FormatVersion2 || repo.Config().Version != chain.FormatVersion2 {
			t.Fatalf("%s: the final rerun left version %d", when, storedVersion(t, store))
		}
		if counts := indexFileVersions(t, store); counts["dpi1"] != 0 {
			t.Fatalf("%s: the final rerun left index files %v", when, counts)
		}
		if report.FromVersion == chain.FormatVersion && leftV2 > 0 && report.V2IndexFilesReused == 0 {
			t.Errorf("%s: the rerun wrote again the version 2 files the crashed run had written: %+v", when, report)
		}
		checkWhole(t, store, when+", then finished")
		checkVerifiesClean(t, repo, when+", then finished")
	}
	// The fixture's migration: a version 2 file, the config, three deletes.
	if steps < 5 || versions[chain.FormatVersion] == 0 || versions[chain.FormatVersion2] == 0 {
		t.Fatalf("migrate took %d steps; crashes left versions %v: the crash points missed a side of the switch", steps, versions)
	}
	t.Logf("migrate takes %d steps; crashes left versions %v", steps, versions)
}

// checkGCAfterCrash runs a GC, instead of a rerun, over what an
// interrupted migration left: the index files of the other version (which
// the GC takes for damaged) are gone after it, every point still restores,
// and a migrate then finishes and verifies clean.
func checkGCAfterCrash(t *testing.T, store chain.Store, when string) {
	t.Helper()
	ctx := context.Background()
	repo, err := snapshot.OpenStore(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.GC(ctx, snapshot.GCOptions{}); err != nil {
		t.Fatalf("%s: GC: %v", when, err)
	}
	foreign := map[int]string{chain.FormatVersion: "dpi2", chain.FormatVersion2: "dpi1"}[repo.Config().Version]
	if n := indexFileVersions(t, store)[foreign]; n != 0 {
		t.Fatalf("%s: a version %d GC left %d %s index files", when, repo.Config().Version, n, foreign)
	}
	when += ", then a GC"
	checkRestoresFixture(t, repo, when)
	if _, err := repo.Migrate(ctx, snapshot.MigrateOptions{}); err != nil {
		t.Fatalf("%s: migrate: %v", when, err)
	}
	checkWhole(t, store, when+", then migrate")
	checkVerifiesClean(t, repo, when+", then migrate")
}

// A migration stopped before its switch, then a create (the repository is
// still version 1), then a rerun: the version 2 file the stopped run wrote
// no longer covers the version 1 files, so the rerun deletes it and writes
// one that does; the new point restores after the migration too.
func TestMigrateRerunReplacesStaleV2Files(t *testing.T) {
	ctx := context.Background()
	store := chain.NewMemStore()
	loadV1FixtureInto(t, store)
	if !migrateCrashingAt(t, store, 2) { // the version 2 file written, the config not switched
		t.Fatal("migrate did not get to its second step")
	}
	if counts := indexFileVersions(t, store); storedVersion(t, store) != 1 || counts["dpi2"] != 1 {
		t.Fatalf("the stopped run left version %d, index files %v", storedVersion(t, store), counts)
	}
	repo, err := snapshot.OpenStore(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "new.img")
	if err := demodisk.Create(img, 16*testBlockSize, 99, demodisk.Mix{Text: 1}); err != nil {
		t.Fatal(err)
	}
	vm, _ := repo.Collection("vm1")
	rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "a", Path: img}}})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	added := fixtureDisk{Collection: "vm1", Point: rp.ID, Disk: "a", Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}

	report, err := repo.Migrate(ctx, snapshot.MigrateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if report.StaleV2IndexFiles != 1 || report.V2IndexFilesReused != 0 || report.V2IndexFilesWritten == 0 || !report.Converted {
		t.Fatalf("the rerun: %+v, want the stale version 2 file replaced", report)
	}
	if counts := indexFileVersions(t, store); counts["dpi1"] != 0 || counts["dpi2"] != report.V2IndexFilesWritten {
		t.Fatalf("after the rerun: index files %v", counts)
	}
	checkRestoresDisks(t, repo, append(v1FixtureDisks(t), added), "after the rerun")
	checkVerifiesClean(t, repo, "after the rerun")
}
