package snapshot_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

// The version 1 fixture opens with today's code, as version 1, lists its
// restore points, restores every disk bit-exact and verifies clean.
func TestV1FixtureReadsToday(t *testing.T) {
	dir := copyV1Fixture(t)
	repo, err := snapshot.Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	if v := repo.Config().Version; v != chain.FormatVersion {
		t.Fatalf("the fixture is version %d", v)
	}
	if n := len(fixtureIndexFiles(t, dir)); n < 2 {
		t.Fatalf("the fixture has %d index files, want at least 2", n)
	}
	if garbage, _ := filepath.Glob(filepath.Join(dir, "garbage", "*")); len(garbage) == 0 {
		t.Fatal("the fixture has no garbage record")
	}
	checkListsFixture(t, repo)
	checkRestoresFixture(t, repo, "version 1")
	checkVerifiesClean(t, repo, "version 1")
}

// Migrating the fixture: its config says version 2, no version 1 index
// file is left, every point restores bit-exact, verify is clean, a create
// afterwards deduplicates against the migrated chunks, GC works, and
// migrating again changes nothing and says so.
func TestMigrateV1Fixture(t *testing.T) {
	ctx := context.Background()
	dir := copyV1Fixture(t)
	before := len(fixtureIndexFiles(t, dir))
	repo, err := snapshot.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	phases := map[string]bool{}
	report, err := repo.Migrate(ctx, snapshot.MigrateOptions{Progress: func(p snapshot.MigrateProgress) { phases[p.Phase] = true }})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("migrate: %+v", report)
	if !report.Converted || report.NothingToDo || report.FromVersion != 1 {
		t.Fatalf("report %+v: want a conversion from version 1", report)
	}
	if report.V1IndexFiles != before || report.V1IndexFilesDeleted != before || report.V2IndexFilesWritten == 0 || report.Blobs == 0 {
		t.Fatalf("report %+v: the fixture has %d version 1 index files", report, before)
	}
	if !phases["read"] || !phases["write"] || !phases["delete"] {
		t.Fatalf("progress reported phases %v", phases)
	}
	store, err := chain.NewLocalStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if v := storedVersion(t, store); v != chain.FormatVersion2 {
		t.Fatalf("config says version %d after migrate", v)
	}
	if counts := indexFileVersions(t, store); counts["dpi1"] != 0 || counts["dpi2"] != report.V2IndexFilesWritten {
		t.Fatalf("index files by magic after migrate: %v", counts)
	}
	// The Repository that migrated is version 2 now, and so is a fresh one.
	if v := repo.Config().Version; v != chain.FormatVersion2 {
		t.Fatalf("the migrating Repository says version %d", v)
	}
	checkRestoresFixture(t, repo, "the migrating Repository")
	repo.Close()
	repo, err = snapshot.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	if v := repo.Config().Version; v != chain.FormatVersion2 {
		t.Fatalf("reopened: version %d", v)
	}
	checkListsFixture(t, repo)
	checkRestoresFixture(t, repo, "migrated")
	checkVerifiesClean(t, repo, "migrated")

	// Again: nothing to do, nothing changed.
	objects := objectNames(t, store, "")
	again, err := repo.Migrate(ctx, snapshot.MigrateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !again.NothingToDo || again.Converted || again.FromVersion != 2 || again.V1IndexFilesDeleted+again.V2IndexFilesWritten != 0 {
		t.Fatalf("a second migrate: %+v", again)
	}
	if after := objectNames(t, store, ""); after != objects {
		t.Fatalf("a second migrate changed the store:\nbefore %s\nafter  %s", objects, after)
	}

	checkCreatesDeduplicateAfterMigrate(t, repo)

	// GC after migrate: delete the oldest point of vm1, collect, and the
	// rest still restore and verify clean.
	disks := v1FixtureDisks(t)
	vm1, _ := repo.Collection("vm1")
	if err := vm1.Delete(ctx, disks[0].Point); err != nil {
		t.Fatal(err)
	}
	gc, err := repo.GC(ctx, snapshot.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gc after migrate: %+v", gc)
	if gc.GarbagePacksDeleted == 0 {
		t.Errorf("the GC did not delete the packs the fixture's garbage record defers: %+v", gc)
	}
	if counts := indexFileVersions(t, store); counts["dpi1"] != 0 || counts["dpi2"] == 0 {
		t.Fatalf("index files by magic after GC: %v", counts)
	}
	var rest []fixtureDisk
	for _, d := range disks {
		if d.Point != disks[0].Point {
			rest = append(rest, d)
		}
	}
	checkRestoresDisks(t, repo, rest, "after GC")
	checkVerifiesClean(t, repo, "after GC")
}

// checkCreatesDeduplicateAfterMigrate restores the newest point of vm1
// and stores it again: into a new collection (no parent, so every chunk
// is looked up in the migrated index) it stores no chunk, and into vm1
// after a small change it stores about the change.
func checkCreatesDeduplicateAfterMigrate(t *testing.T, repo *snapshot.Repository) {
	t.Helper()
	checkCreatesDeduplicate(t, repo, v1FixtureDisks(t))
}

// checkCreatesDeduplicate is checkCreatesDeduplicateAfterMigrate over a
// repository whose points are disks.
func checkCreatesDeduplicate(t *testing.T, repo *snapshot.Repository, disks []fixtureDisk) {
	t.Helper()
	ctx := context.Background()
	var newest []fixtureDisk
	for _, d := range disks {
		if d.Collection == "vm1" {
			if len(newest) > 0 && newest[0].Point != d.Point {
				newest = nil
			}
			newest = append(newest, d)
		}
	}
	work := t.TempDir()
	vm1, _ := repo.Collection("vm1")
	var sources []snapshot.DiskSource
	for _, d := range newest {
		path := filepath.Join(work, d.Disk+".img")
		if _, err := vm1.RestoreDisk(ctx, snapshot.RestoreOptions{Point: d.Point, Disk: d.Disk, Path: path}); err != nil {
			t.Fatal(err)
		}
		sources = append(sources, snapshot.DiskSource{Name: d.Disk, Path: path})
	}
	fresh, _ := repo.Collection("vm1-again")
	rp, err := fresh.Create(ctx, snapshot.CreateOptions{Disks: sources})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range rp.Disks {
		if d.NewChunkBytes != 0 {
			t.Errorf("disk %s stored %d bytes of new chunks: the migrated index did not deduplicate it", d.Name, d.NewChunkBytes)
		}
	}
	changed, err := demodisk.Scatter(sources[0].Path, 0.05, 42)
	if err != nil {
		t.Fatal(err)
	}
	var changedBytes int64
	for _, r := range changed {
		changedBytes += r.Length
	}
	rp, err = vm1.Create(ctx, snapshot.CreateOptions{Disks: sources})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range rp.Disks {
		limit := int64(0)
		if d.Name == sources[0].Name {
			limit = changedBytes + int64(len(changed))*2*testBlockSize // each write touches at most two blocks
		}
		if d.Parent == "" || d.NewChunkBytes > limit {
			t.Errorf("incremental after migrate: disk %s (parent %q) stored %d bytes of new chunks, at most %d changed", d.Name, d.Parent, d.NewChunkBytes, limit)
		}
	}
	if rp.Disks[0].NewChunkBytes == 0 {
		t.Errorf("the changed disk stored nothing new: %+v", rp.Disks[0])
	}
}

// Migrate of a repository made as version 2 does nothing and says so.
func TestMigrateVersion2IsANoOp(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	repo, err := snapshot.Init(ctx, dir, snapshot.InitOptions{BlockSize: testBlockSize, Format: chain.FormatVersion2})
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "d.img")
	if err := demodisk.Create(img, 1<<20, 5, demodisk.MixedImage); err != nil {
		t.Fatal(err)
	}
	vm, _ := repo.Collection("vm")
	if _, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: img}}}); err != nil {
		t.Fatal(err)
	}
	store, _ := chain.NewLocalStore(dir)
	objects := objectNames(t, store, "")
	report, err := repo.Migrate(ctx, snapshot.MigrateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !report.NothingToDo || report.Converted || report.FromVersion != 2 {
		t.Fatalf("migrate of a version 2 repository: %+v", report)
	}
	if after := objectNames(t, store, ""); after != objects {
		t.Fatalf("migrate of a version 2 repository changed it:\nbefore %s\nafter  %s", objects, after)
	}
}

// A version 1 index file that is damaged stops the migration before it
// writes anything.
func TestMigrateStopsAtADamagedV1IndexFile(t *testing.T) {
	ctx := context.Background()
	dir := copyV1Fixture(t)
	files := fixtureIndexFiles(t, dir)
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 1
	if err := os.WriteFile(files[0], data, 0o600); err != nil {
		t.Fatal(err)
	}
	store, _ := chain.NewLocalStore(dir)
	objects := objectNames(t, store, "")
	repo, err := snapshot.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	_, err = repo.Migrate(ctx, snapshot.MigrateOptions{})
	if !errors.Is(err, snapshot.ErrCorrupt) {
		t.Fatalf("migrate over a damaged index file: %v, want ErrCorrupt", err)
	}
	if after := objectNames(t, store, ""); after != objects || storedVersion(t, store) != 1 {
		t.Fatalf("the stopped migrate changed the repository:\nbefore %s\nafter  %s", objects, after)
	}
}

// A process that opened the repository as version 1 before the switch
// and creates a point after it is refused (chain.ErrFormatChanged). An
// older binary does not check: it writes a version 1 index file into the
// version 2 repository. Its point is readable at once (its packs are
// recovered from their headers), and a rerun of Migrate converts that
// file's blobs into a version 2 file before deleting it, after which the
// repository verifies clean.
func TestMigrateRerunKeepsWhatALateV1WriterIndexed(t *testing.T) {
	ctx := context.Background()
	dir := copyV1Fixture(t)
	late, err := snapshot.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	if err := late.Chain().LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	repo, err := snapshot.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	store, _ := chain.NewLocalStore(dir)
	v1Config, err := store.Get(ctx, "config")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Migrate(ctx, snapshot.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "late.img")
	if err := demodisk.Create(img, 16*testBlockSize, 77, demodisk.Mix{Text: 1}); err != nil {
		t.Fatal(err)
	}
	vm, _ := late.Collection("late")
	if _, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: img}}}); !errors.Is(err, chain.ErrFormatChanged) {
		t.Fatalf("a create by the process that opened the repository as version 1: %v, want ErrFormatChanged", err)
	}
	// An older binary, which does not read the config again: show the late
	// process the config it opened while it creates.
	v2Config, err := store.Get(ctx, "config")
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Put(ctx, "config", v1Config); err != nil {
		t.Fatal(err)
	}
	rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: img}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Put(ctx, "config", v2Config); err != nil {
		t.Fatal(err)
	}
	if counts := indexFileVersions(t, store); counts["dpi1"] != 1 {
		t.Fatalf("the late version 1 writer left index files %v, want one version 1 file", counts)
	}
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	lateDisk := fixtureDisk{Collection: "late", Point: rp.ID, Disk: "d", Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}

	fresh, err := snapshot.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	checkRestoresDisks(t, fresh, []fixtureDisk{lateDisk}, "before the rerun")
	report, err := fresh.Migrate(ctx, snapshot.MigrateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if report.NothingToDo || report.FromVersion != 2 || report.V1IndexFilesDeleted != 1 || report.V2IndexFilesWritten != 1 {
		t.Fatalf("the rerun: %+v, want the late file's blobs written to a version 2 file and the file deleted", report)
	}
	if counts := indexFileVersions(t, store); counts["dpi1"] != 0 {
		t.Fatalf("after the rerun: index files %v", counts)
	}
	checkRestoresDisks(t, fresh, append(v1FixtureDisks(t), lateDisk), "after the rerun")
	checkVerifiesClean(t, fresh, "after the rerun")
}
