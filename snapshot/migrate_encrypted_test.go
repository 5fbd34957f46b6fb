package snapshot_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/chain/storetest"
	"github.com/diskpoint/diskpoint/snapshot"
)

// encryptedFixtureKey is the key of the encrypted version 1 fixture
// (testdata/v1repo-encrypted, TestGenerateEncryptedV1Fixture).
var encryptedFixtureKey = bytes.Repeat([]byte{0x5a, 0xc3}, chain.KeySize/2)

// encryptedV1Fixture returns a MemStore holding the encrypted version 1
// fixture, and what its disks restore to.
func encryptedV1Fixture(t *testing.T) (chain.Store, []fixtureDisk) {
	t.Helper()
	store := chain.NewMemStore()
	err := filepath.WalkDir(encryptedV1FixtureDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(encryptedV1FixtureDir, path)
		return store.Put(context.Background(), filepath.ToSlash(rel), data)
	})
	if err != nil {
		t.Fatal(err)
	}
	var disks []fixtureDisk
	data, err := os.ReadFile(encryptedV1FixtureExpected)
	if err == nil {
		err = json.Unmarshal(data, &disks)
	}
	if err != nil || len(disks) == 0 {
		t.Fatalf("the encrypted fixture's disks: %v (%d)", err, len(disks))
	}
	return store, disks
}

// checkNoVersion1Object checks that store holds nothing version 1 wrote or
// anyone could read without the key: every pack ends "dpk2" (a sealed
// header), every index file is a sealed file ("dps2"), nothing is staged
// any more, and every other object but the config and keys/ opens only
// with the key ring (it does not begin "dpe1", and is not plain JSON).
func checkNoVersion1Object(t *testing.T, store chain.Store, when string) {
	t.Helper()
	ctx := context.Background()
	err := store.List(ctx, "", func(info chain.ObjectInfo) error {
		data, err := store.Get(ctx, info.Name)
		if err != nil {
			return err
		}
		name := info.Name
		switch {
		case name == "config" || strings.HasPrefix(name, "keys/"):
		case strings.HasPrefix(name, "packs/"):
			if !bytes.HasSuffix(data, []byte("dpk2")) {
				return fmt.Errorf("pack %s ends %q, not in a sealed header", name, data[len(data)-4:])
			}
		case strings.HasPrefix(name, "index/"):
			if !bytes.HasPrefix(data, []byte("dps2")) {
				return fmt.Errorf("index file %s begins %q, not a sealed file", name, data[:4])
			}
		case strings.HasPrefix(name, "migrate/"):
			return fmt.Errorf("%s is still staged", name)
		default:
			if bytes.HasPrefix(data, []byte("dpe1")) || json.Valid(data) {
				return fmt.Errorf("%s is version 1's (begins %q)", name, data[:4])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
}

// checkEncryptedV2Config checks that the config says encrypted version 2.
func checkEncryptedV2Config(t *testing.T, repo *snapshot.Repository, store chain.Store, when string) {
	t.Helper()
	if v := storedVersion(t, store); v != chain.FormatVersion2 {
		t.Fatalf("%s: the config says version %d", when, v)
	}
	cfg := repo.Config()
	if cfg.Version != chain.FormatVersion2 || cfg.Encryption != "xchacha20-poly1305" || !repo.Chain().Encrypted() {
		t.Fatalf("%s: config %+v, want encrypted version 2", when, cfg)
	}
}

// Migrating an encrypted version 1 repository: the config says encrypted
// version 2, every point restores bit-exact, verify is clean, no version 1
// object is left, the version 1 key opens it (as its key ring's first
// key), an incremental create stores only the change, and key add and key
// remove work on it.
func TestMigrateEncryptedV1(t *testing.T) {
	ctx := context.Background()
	store, disks := encryptedV1Fixture(t)
	repo, err := snapshot.OpenStore(ctx, store, encryptedFixtureKey)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := repo.Config(); cfg.Version != chain.FormatVersion || cfg.Encryption != "aes-256-gcm" {
		t.Fatalf("the encrypted fixture's config: %+v", cfg)
	}
	checkRestoresDisks(t, repo, disks, "the encrypted fixture, before migrate")
	checkVerifiesClean(t, repo, "the encrypted fixture, before migrate")
	phases := map[string]bool{}
	report, err := repo.Migrate(ctx, snapshot.MigrateOptions{Progress: func(p snapshot.MigrateProgress) { phases[p.Phase] = true }})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("migrate: %+v", report)
	if !report.Converted || report.FromVersion != 1 || report.V1Packs == 0 || report.V2PacksWritten != report.V1Packs || report.V1PacksDeleted != report.V1Packs || report.ObjectsResealed == 0 || report.ObjectsMoved == 0 {
		t.Fatalf("report %+v: want every pack converted and deleted, and the objects moved", report)
	}
	for _, phase := range []string{"packs", "read", "write", "stage", "move", "delete"} {
		if !phases[phase] {
			t.Errorf("progress reported phases %v, not %q", phases, phase)
		}
	}
	checkEncryptedV2Config(t, repo, store, "the migrating Repository")
	checkNoVersion1Object(t, store, "after migrate")
	checkRestoresDisks(t, repo, disks, "the migrating Repository")
	repo.Close()

	repo, err = snapshot.OpenStore(ctx, store, encryptedFixtureKey)
	if err != nil {
		t.Fatalf("the version 1 key does not open the migrated repository: %v", err)
	}
	defer repo.Close()
	checkEncryptedV2Config(t, repo, store, "reopened")
	checkRestoresDisks(t, repo, disks, "reopened")
	checkVerifiesClean(t, repo, "migrated")

	again, err := repo.Migrate(ctx, snapshot.MigrateOptions{})
	if err != nil || !again.NothingToDo {
		t.Fatalf("a second migrate: %+v, %v", again, err)
	}

	checkCreatesDeduplicate(t, repo, disks)

	keys, err := repo.Keys(ctx)
	if err != nil || len(keys) != 1 {
		t.Fatalf("keys of the migrated repository: %v, %v", keys, err)
	}
	cred, err := chain.PasswordCredential("a password added after migrate")
	if err != nil {
		t.Fatal(err)
	}
	added, err := repo.AddKey(ctx, cred, chain.KeyOptions{Argon2: chain.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	byPassword, err := snapshot.OpenStoreWithCredential(ctx, store, cred)
	if err != nil {
		t.Fatalf("the added password does not open it: %v", err)
	}
	checkRestoresDisks(t, byPassword, disks[:1], "opened by the added password")
	if err := byPassword.RemoveKey(ctx, keys[0].ID); err != nil {
		t.Fatalf("remove the converted key: %v", err)
	}
	if _, err := snapshot.OpenStore(ctx, store, encryptedFixtureKey); !errors.Is(err, chain.ErrWrongKey) {
		t.Fatalf("open with the removed key: %v, want ErrWrongKey", err)
	}
	if byPassword.Chain().UsedKey() != added {
		t.Fatalf("opened by key %s, added %s", byPassword.Chain().UsedKey(), added)
	}
}

// Migrate with the wrong key is refused with ErrWrongKey (the open is),
// and changes nothing.
func TestMigrateEncryptedWrongKey(t *testing.T) {
	ctx := context.Background()
	store, _ := encryptedV1Fixture(t)
	before := objectNames(t, store, "")
	wrong := bytes.Repeat([]byte{1}, chain.KeySize)
	if _, err := snapshot.OpenStore(ctx, store, wrong); !errors.Is(err, chain.ErrWrongKey) {
		t.Fatalf("open with the wrong key: %v, want ErrWrongKey", err)
	}
	if _, err := snapshot.OpenStore(ctx, store, nil); !errors.Is(err, chain.ErrKeyRequired) {
		t.Fatalf("open without a key: %v, want ErrKeyRequired", err)
	}
	if after := objectNames(t, store, ""); after != before || storedVersion(t, store) != 1 {
		t.Fatalf("the store changed:\nbefore %s\nafter  %s", before, after)
	}
}

// checkWholeEncrypted opens store with the fixture's key and checks that
// it is the version its config says, lists and restores every point
// bit-exact, and that verify finds nothing that hurts a point: only the
// other version's packs and index files, which it cannot read.
func checkWholeEncrypted(t *testing.T, store chain.Store, disks []fixtureDisk, when string) int {
	t.Helper()
	ctx := context.Background()
	repo, err := snapshot.OpenStore(ctx, store, encryptedFixtureKey)
	if err != nil {
		t.Fatalf("%s: open: %v", when, err)
	}
	version := repo.Config().Version
	if version != storedVersion(t, store) {
		t.Fatalf("%s: opened as version %d, the config says %d", when, version, storedVersion(t, store))
	}
	checkRestoresDisks(t, repo, disks, when)
	report, err := repo.Verify(ctx, snapshot.VerifyOptions{StructureOnly: true})
	if err != nil {
		t.Fatalf("%s: verify: %v", when, err)
	}
	for _, d := range report.Damage {
		if len(d.RestorePoints) != 0 || (d.Kind != "index" && d.Kind != "pack") {
			t.Fatalf("%s: verify reports %+v: only the other version's packs and index files may be, hurting no point", when, d)
		}
	}
	return version
}

// The encrypted migration interrupted at every one of its writes and
// deletes, and its rerun interrupted at the same step again, leaves a
// repository that opens with the key, as the version its config says, and
// restores every point bit-exact; the final rerun finishes it, reusing the
// version 2 packs the interrupted runs wrote, and it verifies clean with no
// version 1 object left.
func TestMigrateEncryptedCrashAtEveryStepThenRerun(t *testing.T) {
	ctx := context.Background()
	base, disks := encryptedV1Fixture(t)
	versions := map[int]int{}
	steps := 0
	for at := 1; ; at++ {
		store := storetest.Clone(t, base)
		if !migrateEncryptedCrashingAt(t, store, at) {
			steps = at - 1
			break
		}
		when := fmt.Sprintf("crashed at step %d", at)
		versions[checkWholeEncrypted(t, store, disks, when)]++
		checkGCAfterEncryptedCrash(t, storetest.Clone(t, store), disks, when)
		migrateEncryptedCrashingAt(t, store, at)
		checkWholeEncrypted(t, store, disks, when+", and its rerun too")

		repo, err := snapshot.OpenStore(ctx, store, encryptedFixtureKey)
		if err != nil {
			t.Fatal(err)
		}
		report, err := repo.Migrate(ctx, snapshot.MigrateOptions{})
		if err != nil {
			t.Fatalf("%s: the final rerun: %v", when, err)
		}
		if report.FromVersion == chain.FormatVersion && at > 2 && report.V2PacksReused == 0 {
			t.Errorf("%s: the rerun wrote again every version 2 pack the crashed runs had written: %+v", when, report)
		}
		checkEncryptedV2Config(t, repo, store, when+", then finished")
		checkNoVersion1Object(t, store, when+", then finished")
		checkWholeEncrypted(t, store, disks, when+", then finished")
		checkVerifiesClean(t, repo, when+", then finished")
		repo.Close()
	}
	if steps < 10 || versions[chain.FormatVersion] == 0 || versions[chain.FormatVersion2] == 0 {
		t.Fatalf("migrate took %d steps; crashes left versions %v: the crash points missed a side of the switch", steps, versions)
	}
	t.Logf("the encrypted migration takes %d steps; crashes left versions %v", steps, versions)
}

// migrateEncryptedCrashingAt is migrateCrashingAt over the encrypted
// fixture, opened with its key.
func migrateEncryptedCrashingAt(t *testing.T, store chain.Store, at int) (crashed bool) {
	t.Helper()
	cs := &crashStore{Store: store, at: at}
	repo, err := snapshot.OpenStore(context.Background(), cs, encryptedFixtureKey)
	if err != nil {
		t.Fatal(err)
	}
	_, err = repo.Migrate(context.Background(), snapshot.MigrateOptions{})
	if err != nil && !errors.Is(err, errCrashed) {
		t.Fatalf("migrate crashing at call %d failed otherwise: %v", at, err)
	}
	// A run that switched the config and then failed leaves its
	// Repository version 2 too: used on, it must not write version 1.
	if v := storedVersion(t, store); repo.Config().Version != v {
		t.Fatalf("migrate crashing at call %d: the config says version %d, its Repository %d", at, v, repo.Config().Version)
	}
	return err != nil
}

// While a reader (here a disk open for reading) holds a lock, the
// encrypted migration, which deletes every version 1 pack, refuses with
// ErrLocked and changes nothing; once the reader is done it converts.
func TestMigrateEncryptedWaitsForNoReader(t *testing.T) {
	ctx := context.Background()
	store, disks := encryptedV1Fixture(t)
	reading, err := snapshot.OpenStore(ctx, store, encryptedFixtureKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := reading.Collection(disks[0].Collection)
	reader, err := c.OpenDisk(ctx, disks[0].Point, disks[0].Disk, snapshot.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before := objectNames(t, store, "")
	repo, err := snapshot.OpenStore(ctx, store, encryptedFixtureKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Migrate(ctx, snapshot.MigrateOptions{}); !errors.Is(err, snapshot.ErrLocked) {
		t.Fatalf("migrate while a reader reads: %v, want ErrLocked", err)
	}
	if after := objectNames(t, store, ""); after != before || storedVersion(t, store) != 1 {
		t.Fatalf("the refused migrate changed the store:\nbefore %s\nafter  %s", before, after)
	}
	if err := reader.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Migrate(ctx, snapshot.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	checkRestoresDisks(t, repo, disks, "after the reader was done")
}

// checkGCAfterEncryptedCrash runs a GC, of whichever version the config
// says, over what an interrupted migration left: it deletes the other
// version's packs and index files as unreadable leftovers, and every
// point still restores; migrate then finishes, and the repository
// verifies clean with no version 1 object left.
func checkGCAfterEncryptedCrash(t *testing.T, store chain.Store, disks []fixtureDisk, when string) {
	t.Helper()
	ctx := context.Background()
	when += ", then a GC"
	repo, err := snapshot.OpenStore(ctx, store, encryptedFixtureKey)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	if _, err := repo.GC(ctx, snapshot.GCOptions{}); err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	checkRestoresDisks(t, repo, disks, when)
	if _, err := repo.Migrate(ctx, snapshot.MigrateOptions{}); err != nil {
		t.Fatalf("%s: migrate: %v", when, err)
	}
	checkNoVersion1Object(t, store, when+" and migrate")
	checkRestoresDisks(t, repo, disks, when+" and migrate")
	checkVerifiesClean(t, repo, when+" and migrate")
}

// A migrate killed inside a Put leaves that Put's temporary file, here
// among the staged objects; the run that finishes removes it with them
// (the kill harness found one left under migrate/).
func TestMigrateEncryptedLeavesNoTemporaryFile(t *testing.T) {
	ctx := context.Background()
	dir := copyFixture(t, encryptedV1FixtureDir)
	// Another host's writer, an hour and more ago: orphaned by any rule.
	stray := filepath.Join(dir, "migrate", "manifests", "vm", ".tmp-otherhost-4242-1")
	if err := os.MkdirAll(filepath.Dir(stray), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stray, []byte("half a manifest"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(stray, old, old); err != nil {
		t.Fatal(err)
	}
	repo, err := snapshot.OpenWithKey(ctx, dir, encryptedFixtureKey)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	if _, err := repo.Migrate(ctx, snapshot.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stray); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the finished migrate left %s (stat: %v)", stray, err)
	}
}
