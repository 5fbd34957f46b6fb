package snapshot_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

var updateFixture = flag.Bool("update-fixture", false, "rewrite testdata/v1repo, the version 1 repository the migration tests start from")

// The version 1 fixture: a repository written by the version 1 code, kept
// in testdata so that every later build is tested against the same bytes,
// and what each of its disks restores to.
const (
	v1FixtureDir      = "testdata/v1repo"
	v1FixtureExpected = "testdata/v1repo.json"
	// The same history, encrypted under encryptedFixtureKey.
	encryptedV1FixtureDir      = "testdata/v1repo-encrypted"
	encryptedV1FixtureExpected = "testdata/v1repo-encrypted.json"
)

// fixtureDisk is one disk of one restore point of the fixture, and the
// SHA-256 of its bytes.
type fixtureDisk struct {
	Collection string `json:"collection"`
	Point      string `json:"point"`
	Disk       string `json:"disk"`
	Size       int64  `json:"size"`
	SHA256     string `json:"sha256"`
}

// TestGenerateV1Fixture writes the fixture (go test ./snapshot -run
// TestGenerateV1Fixture -update-fixture). It makes, with version 1:
// collection vm1 with disks a and b, three points, the second deleted and
// collected while a reader holds a point of vm2 (so the GC defers a
// dropped pack and writes a garbage record, and its index lists only the
// live tree nodes of the packs it keeps), then a fourth point; collection
// vm2 with one disk, c, three points. A tree fanout of 2 makes block maps
// of four levels from disks of 16 blocks. It ends with three index files
// (the GC's and two creates'), about 380 KB in all.
func TestGenerateV1Fixture(t *testing.T) {
	if !*updateFixture {
		t.Skip("run with -update-fixture to rewrite the fixture")
	}
	generateFixture(t, v1FixtureDir, v1FixtureExpected, nil)
}

// TestGenerateEncryptedV1Fixture writes the encrypted fixture (go test
// ./snapshot -run TestGenerateEncryptedV1Fixture -update-fixture): the
// same history as TestGenerateV1Fixture's, in an encrypted version 1
// repository whose key is encryptedFixtureKey.
func TestGenerateEncryptedV1Fixture(t *testing.T) {
	if !*updateFixture {
		t.Skip("run with -update-fixture to rewrite the fixture")
	}
	generateFixture(t, encryptedV1FixtureDir, encryptedV1FixtureExpected, encryptedFixtureKey)
}

// generateFixture writes a fixture into dir (made afresh) and what its
// disks restore to into expectedFile.
func generateFixture(t *testing.T, dir, expectedFile string, key []byte) {
	t.Helper()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	store, err := chain.NewLocalStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	expected, report := writeV1Fixture(t, store, key)
	data, err := json.MarshalIndent(expected, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(expectedFile, append(data, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	var size int64
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			info, _ := d.Info()
			size += info.Size()
		}
		return err
	})
	t.Logf("fixture %s: %d bytes, %d index files, GC %+v", dir, size, len(fixtureIndexFiles(t, dir)), report)
}

// writeV1Fixture makes the fixture's repository (see TestGenerateV1Fixture)
// in store with the version 1 code, encrypted with key when it is not nil,
// and returns what each disk of each point restores to, and its GC's
// report.
func writeV1Fixture(t testing.TB, store chain.Store, key []byte) ([]fixtureDisk, chain.GCReport) {
	t.Helper()
	ctx := context.Background()
	cfg, err := chain.NewConfig(testBlockSize)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Version, cfg.TreeFanout = chain.FormatVersion, 2
	if _, err := chain.Init(ctx, store, cfg, key); err != nil {
		t.Fatal(err)
	}
	repo, err := snapshot.OpenStore(ctx, store, key)
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	disks := map[string]string{}
	for i, name := range []string{"a", "b", "c"} {
		disks[name] = filepath.Join(work, name+".img")
		if err := demodisk.Create(disks[name], 16*testBlockSize, uint64(i+1), demodisk.Mix{Holes: 1, Text: 2}); err != nil {
			t.Fatal(err)
		}
	}
	var expected []fixtureDisk
	create := func(collection string, names ...string) string {
		t.Helper()
		for _, name := range names {
			if _, err := demodisk.Scatter(disks[name], 0.04, uint64(len(expected))+7); err != nil {
				t.Fatal(err)
			}
		}
		c, _ := repo.Collection(collection)
		var sources []snapshot.DiskSource
		for _, name := range names {
			sources = append(sources, snapshot.DiskSource{Name: name, Path: disks[name]})
		}
		rp, err := c.Create(ctx, snapshot.CreateOptions{Disks: sources})
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			data, err := os.ReadFile(disks[name])
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(data)
			expected = append(expected, fixtureDisk{Collection: collection, Point: rp.ID, Disk: name, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])})
		}
		return rp.ID
	}
	create("vm1", "a", "b")
	deleted := create("vm1", "a", "b")
	create("vm1", "a", "b")
	held := create("vm2", "c")
	create("vm2", "c")

	vm1, _ := repo.Collection("vm1")
	if err := vm1.Delete(ctx, deleted); err != nil {
		t.Fatal(err)
	}
	var kept []fixtureDisk
	for _, d := range expected {
		if d.Point != deleted {
			kept = append(kept, d)
		}
	}
	expected = kept
	vm2, _ := repo.Collection("vm2")
	reader, err := vm2.OpenDisk(ctx, held, "c", snapshot.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	report, err := repo.GC(ctx, snapshot.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := reader.Close(); err != nil {
		t.Fatal(err)
	}
	if report.PacksDeferred == 0 {
		t.Fatalf("the GC deferred no pack, so the fixture has no garbage record: %+v", report)
	}
	create("vm1", "a", "b")
	create("vm2", "c")
	return expected, report
}

// fixtureIndexFiles lists the index files of the repository in dir.
func fixtureIndexFiles(t *testing.T, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "index", "*"))
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// copyV1Fixture copies the fixture into a new directory and returns it:
// even reading a repository writes lock objects, and the fixture must
// stay as it is.
func copyV1Fixture(t testing.TB) string {
	t.Helper()
	return copyFixture(t, v1FixtureDir)
}

// copyFixture copies the fixture in directory src into a new directory,
// named as src is, and returns it.
func copyFixture(t testing.TB, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// loadV1FixtureInto puts every object of the fixture into store.
func loadV1FixtureInto(t testing.TB, store chain.Store) {
	t.Helper()
	err := filepath.WalkDir(v1FixtureDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(v1FixtureDir, path)
		return store.Put(context.Background(), filepath.ToSlash(rel), data)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// v1FixtureDisks is what every disk of every restore point of the fixture
// restores to.
func v1FixtureDisks(t testing.TB) []fixtureDisk {
	t.Helper()
	data, err := os.ReadFile(v1FixtureExpected)
	if err != nil {
		t.Fatal(err)
	}
	var disks []fixtureDisk
	if err := json.Unmarshal(data, &disks); err != nil {
		t.Fatal(err)
	}
	if len(disks) == 0 {
		t.Fatal("the fixture expects no disks")
	}
	return disks
}

// checkRestoresFixture restores every disk of every point of the fixture
// from repo and compares it with what it was.
func checkRestoresFixture(t testing.TB, repo *snapshot.Repository, when string) {
	t.Helper()
	checkRestoresDisks(t, repo, v1FixtureDisks(t), when)
}

// checkRestoresDisks restores each of disks from repo and compares it
// with what it was.
func checkRestoresDisks(t testing.TB, repo *snapshot.Repository, disks []fixtureDisk, when string) {
	t.Helper()
	ctx := context.Background()
	out := filepath.Join(t.TempDir(), "restored.img")
	for _, d := range disks {
		c, err := repo.Collection(d.Collection)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.RestoreDisk(ctx, snapshot.RestoreOptions{Point: d.Point, Disk: d.Disk, Path: out, Overwrite: true}); err != nil {
			t.Fatalf("%s: restore %s/%s disk %s: %v", when, d.Collection, d.Point, d.Disk, err)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != d.SHA256 || int64(len(data)) != d.Size {
			t.Fatalf("%s: %s/%s disk %s restores %d bytes of SHA-256 %s, not %d bytes of %s", when, d.Collection, d.Point, d.Disk, len(data), got, d.Size, d.SHA256)
		}
	}
}

// checkListsFixture checks that the collections list exactly the fixture's
// restore points.
func checkListsFixture(t testing.TB, repo *snapshot.Repository) {
	t.Helper()
	ctx := context.Background()
	want := map[string]bool{}
	for _, d := range v1FixtureDisks(t) {
		want[d.Collection+"/"+d.Point] = true
	}
	names, err := repo.Collections(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, name := range names {
		c, _ := repo.Collection(name)
		points, err := c.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range points {
			got[name+"/"+p.ID] = true
		}
	}
	if len(got) != len(want) {
		t.Fatalf("the collections list %v, the fixture has %v", got, want)
	}
	for p := range want {
		if !got[p] {
			t.Fatalf("restore point %s is not listed (listed: %v)", p, got)
		}
	}
}

// checkVerifiesClean runs a full and a structure-only verify; both must
// find no damage.
func checkVerifiesClean(t testing.TB, repo *snapshot.Repository, when string) {
	t.Helper()
	for _, structureOnly := range []bool{false, true} {
		report, err := repo.Verify(context.Background(), snapshot.VerifyOptions{StructureOnly: structureOnly})
		if err != nil {
			t.Fatalf("%s: verify (structure only: %v): %v", when, structureOnly, err)
		}
		if len(report.Damage) != 0 {
			t.Fatalf("%s: verify (structure only: %v) reports damage: %+v", when, structureOnly, report.Damage)
		}
	}
}

// indexFileVersions counts the index files of store by their magic: "dpi1"
// (version 1) or "dpi2".
func indexFileVersions(t testing.TB, store chain.Store) map[string]int {
	t.Helper()
	ctx := context.Background()
	counts := map[string]int{}
	err := store.List(ctx, "index/", func(info chain.ObjectInfo) error {
		data, err := store.Get(ctx, info.Name)
		if err != nil {
			return err
		}
		counts[string(data[:min(4, len(data))])]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return counts
}

// storedVersion reads the format version the config of store says.
func storedVersion(t testing.TB, store chain.Store) int {
	t.Helper()
	data, err := store.Get(context.Background(), "config")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct{ Version int }
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg.Version
}

// objectNames lists every object of store under prefix, for comparing a
// store before and after.
func objectNames(t testing.TB, store chain.Store, prefix string) string {
	t.Helper()
	var names []string
	store.List(context.Background(), prefix, func(info chain.ObjectInfo) error {
		names = append(names, info.Name)
		return nil
	})
	slices.Sort(names)
	return strings.Join(names, " ")
}
