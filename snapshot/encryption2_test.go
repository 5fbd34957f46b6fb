package snapshot_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/consistency"
	"github.com/diskpoint/diskpoint/snapshot"
)

// encryptedV2Fixture is a format version 2 repository (encrypted with key,
// or plain when key is nil) holding two restore points of a disk in the
// collection "secret-collection", made with a pre-script whose output is
// logged.
type encryptedV2Fixture struct {
	repo  *snapshot.Repository
	dir   string
	vm    *snapshot.Collection
	point *snapshot.RestorePoint
	image []byte
}

const (
	secretCollection = "secret-collection"
	secretDisk       = "secret-disk-name"
)

func newEncryptedV2Fixture(t *testing.T, key []byte) *encryptedV2Fixture {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	repo, err := snapshot.Init(ctx, dir, snapshot.InitOptions{BlockSize: testBlockSize, Key: key, Format: chain.FormatVersion2})
	if err != nil {
		t.Fatal(err)
	}
	vm, _ := repo.Collection(secretCollection)
	work := t.TempDir()
	disk := makeDisk(t, work, "d.img", 2<<20, 11)
	pre := filepath.Join(work, "pre.sh")
	os.WriteFile(pre, []byte("#!/bin/sh\necho script-output-that-is-secret\n"), 0o700)
	opts := snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: secretDisk, Path: disk}}, VMConfig: []byte("vm-config-secret"),
		Consistency: consistency.Application,
		Hooks:       []consistency.Hook{&consistency.ScriptHook{Config: consistency.ScriptConfig{PreScriptLocation: pre, TimeoutInSeconds: 10}}}}
	if _, err := vm.Create(ctx, opts); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(disk, os.O_WRONLY, 0)
	f.WriteAt(bytes.Repeat([]byte{7}, 3*testBlockSize), 5*testBlockSize)
	f.Close()
	rp, err := vm.Create(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	// A collection's state (what a later create resumes from) is sealed too.
	if err := repo.Chain().SaveCollectionState(ctx, secretCollection, []byte(`{"note":"collection-state-secret"}`)); err != nil {
		t.Fatal(err)
	}
	return &encryptedV2Fixture{repo: repo, dir: dir, vm: vm, point: rp, image: readFile(t, disk)}
}

// storedObjects returns every object file under dir but the config and the
// key objects, by object name.
func storedObjects(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	objects := map[string][]byte{}
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		name, _ := filepath.Rel(dir, path)
		name = filepath.ToSlash(name)
		if name != "config" && !strings.HasPrefix(name, "keys/") {
			objects[name] = readFile(t, path)
		}
		return nil
	})
	return objects
}

// An encrypted version 2 repository stores nothing in the clear but its
// config and key objects: no data, no manifest field, collection or disk
// name, no hook output, no blob ID (a pack header's or index file's entries
// would show them), no index or pack magic. The same walk over a plain
// version 2 repository finds every one of them, so the walk does look.
func TestEncryptedVersion2StoresNoPlaintext(t *testing.T) {
	ctx := context.Background()
	key, _ := chain.NewKey()
	for _, encrypted := range []bool{false, true} {
		var k []byte
		if encrypted {
			k = key
		}
		fx := newEncryptedV2Fixture(t, k)
		// Hold a lock, so that a lock object is stored too.
		unlock, err := fx.repo.Chain().LockCollection(ctx, secretCollection, "test", 0)
		if err != nil {
			t.Fatal(err)
		}
		objects := storedObjects(t, fx.dir)
		unlock()
		kinds := map[string]bool{}
		for name := range objects {
			kinds[name[:strings.Index(name, "/")]] = true
		}
		for _, kind := range []string{"packs", "index", "manifests", "state", "logs", "locks", "heads"} {
			if !kinds[kind] {
				t.Fatalf("no %s objects to look at: %v", kind, kinds)
			}
		}
		m, err := fx.repo.Chain().LoadManifest(ctx, secretCollection, fx.point.ID)
		if err != nil {
			t.Fatal(err)
		}
		ids := (&corruptionFixture{repo: fx.repo, points: map[string]*snapshot.RestorePoint{"A": fx.point}}).blockIDs(t, "A")
		needles := map[string][]byte{
			"data":               fx.image[:64],
			"collection name":    []byte(secretCollection),
			"disk name":          []byte(secretDisk),
			"manifest field":     []byte(`"consistency"`),
			"lock field":         []byte(`"operation"`),
			"hook output":        []byte("script-output-that-is-secret"),
			"VM config":          []byte("vm-config-secret"),
			"collection state":   []byte("collection-state-secret"),
			"root node ID":       m.Disks[0].Root[:],
			"block ID":           ids[1][:],
			"index file magic":   []byte("dpi2"),
			"plain pack trailer": []byte("dpk1"),
		}
		for what, needle := range needles {
			var in []string
			for name, data := range objects {
				if bytes.Contains(data, needle) {
					in = append(in, name)
				}
			}
			if encrypted && len(in) > 0 {
				t.Errorf("encrypted: the %s is stored in the clear in %v", what, in)
			}
			if !encrypted && len(in) == 0 {
				t.Errorf("plain: the %s is nowhere: the walk does not look where it should", what)
			}
		}
	}
}

// A byte changed in any object of an encrypted version 2 repository is
// found, named, and never read as other data: verify reports a damaged
// pack or index file and the blobs it affects, a damaged manifest, state
// or hook log is ErrCorrupt naming it, and a restore either returns the
// disk exactly or fails with ErrCorrupt.
func TestEncryptedVersion2DamageIsFound(t *testing.T) {
	ctx := context.Background()
	key, _ := chain.NewKey()
	fx := newEncryptedV2Fixture(t, key)
	fx.repo.Close()
	for name, data := range storedObjects(t, fx.dir) {
		t.Run(strings.ReplaceAll(name, "/", "_"), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "repo")
			if err := os.CopyFS(dir, os.DirFS(fx.dir)); err != nil {
				t.Fatal(err)
			}
			flipAt(t, filepath.Join(dir, name), int64(len(data)/2))
			repo, err := snapshot.OpenWithKey(ctx, dir, key)
			if err != nil {
				t.Fatal(err)
			}
			defer repo.Close()
			vm, _ := repo.Collection(secretCollection)
			named := func(what string, err error) {
				t.Helper()
				var ce *chain.CorruptError
				if !errors.As(err, &ce) || ce.Object != name {
					t.Errorf("%s with %s damaged: %v, want ErrCorrupt naming it", what, name, err)
				}
			}
			kind := name[:strings.Index(name, "/")]
			switch kind {
			case "packs", "index", "manifests":
				report, err := repo.Verify(ctx, snapshot.VerifyOptions{})
				if err != nil {
					t.Fatal(err)
				}
				found := false
				for _, d := range report.Damage {
					found = found || strings.Contains(d.Object, filepath.Base(name)) || strings.Contains(d.Object, strings.TrimPrefix(name, "manifests/"))
				}
				if !found {
					t.Errorf("verify does not name %s: %+v", name, report.Damage)
				}
			case "state":
				_, err := repo.Chain().LoadCollectionState(ctx, secretCollection)
				named("load the collection state", err)
			case "logs":
				named("read the hook logs", repo.Chain().HookLogs(ctx, secretCollection, func(string, []byte) error { return nil }))
			case "heads":
				// A cache, never trusted when damaged: a reader passes it
				// over, a create rebuilds it from the manifests.
				if _, ok, err := repo.Chain().NewestManifests(ctx, secretCollection, []string{secretDisk}, false); ok || err != nil {
					t.Errorf("a reader with %s damaged: used it %v, %v", name, ok, err)
				}
				found, ok, err := repo.Chain().NewestManifests(ctx, secretCollection, []string{secretDisk}, true)
				if err != nil || !ok || found[secretDisk] == nil || found[secretDisk].ID != fx.point.ID {
					t.Errorf("the newest point with %s damaged: %v, %v, %v; want %s", name, found, ok, err, fx.point.ID)
				}
				if _, ok, err := repo.Chain().NewestManifests(ctx, secretCollection, []string{secretDisk}, false); !ok || err != nil {
					t.Errorf("%s not rebuilt: %v, %v", name, ok, err)
				}
			default:
				t.Fatalf("an object of a kind this test does not know: %s", name)
			}
			if kind == "manifests" {
				id := name[strings.LastIndex(name, "/")+1:]
				_, err := repo.Chain().LoadManifest(ctx, secretCollection, id)
				named("load the manifest", err)
				if id == fx.point.ID {
					return
				}
			}
			out := filepath.Join(t.TempDir(), "out.img")
			_, err = vm.RestoreDisk(ctx, snapshot.RestoreOptions{Point: fx.point.ID, Disk: secretDisk, Path: out})
			switch {
			case err == nil:
				if !bytes.Equal(readFile(t, out), fx.image) {
					t.Errorf("with %s damaged, a restore returned other bytes", name)
				}
			case !errors.Is(err, chain.ErrCorrupt):
				t.Errorf("restore with %s damaged: %v, want the disk or ErrCorrupt", name, err)
			}
		})
	}
}

// An encrypted version 2 repository opened by a password through its life:
// restore points made and deleted, GC repacking what is left, verify, a
// damaged chunk repaired from the disk, a lost index file recovered from
// the packs' sealed headers, credentials added and changed through the
// snapshot API; every remaining restore point restores exactly throughout.
func TestEncryptedVersion2Lifecycle(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	cheap := chain.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}
	repo, err := snapshot.Init(ctx, dir, snapshot.InitOptions{BlockSize: testBlockSize, Password: "pw one", Argon2: cheap, KeyLabel: "first", Format: chain.FormatVersion2})
	if err != nil {
		t.Fatal(err)
	}
	vm, _ := repo.Collection("vm")
	work := t.TempDir()
	disk := makeDisk(t, work, "d.img", 2<<20, 21)
	images := map[string][]byte{}
	var ids []string
	for i := range 4 {
		f, _ := os.OpenFile(disk, os.O_WRONLY, 0)
		f.WriteAt(bytes.Repeat([]byte{byte(i + 1)}, 8*testBlockSize), int64(i)*8*testBlockSize)
		f.Close()
		rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}})
		if err != nil {
			t.Fatal(err)
		}
		images[rp.ID] = readFile(t, disk)
		ids = append(ids, rp.ID)
	}
	restoresAll := func(what string, repo *snapshot.Repository) {
		t.Helper()
		vm, _ := repo.Collection("vm")
		for id, image := range images {
			out := filepath.Join(t.TempDir(), "out.img")
			if _, err := vm.RestoreDisk(ctx, snapshot.RestoreOptions{Point: id, Disk: "d", Path: out}); err != nil {
				t.Fatalf("%s: restore %s: %v", what, id, err)
			}
			if !bytes.Equal(readFile(t, out), image) {
				t.Fatalf("%s: restore %s differs", what, id)
			}
		}
	}
	for _, id := range ids[:2] {
		if err := vm.Delete(ctx, id); err != nil {
			t.Fatal(err)
		}
		delete(images, id)
	}
	report, err := repo.GC(ctx, snapshot.GCOptions{RepackUnused: 0.01})
	if err != nil {
		t.Fatal(err)
	}
	if report.PacksRepacked+report.PacksDeleted == 0 {
		t.Fatalf("GC removed nothing: %+v", report)
	}
	if vr, err := repo.Verify(ctx, snapshot.VerifyOptions{}); err != nil || !vr.OK() {
		t.Fatalf("verify after GC: %+v, %v", vr.Damage, err)
	}
	restoresAll("after GC", repo)

	// A chunk of the newest point damaged, then repaired from the disk.
	fx := &corruptionFixture{repo: repo, points: map[string]*snapshot.RestorePoint{"A": mustGet(t, vm, ids[3])}}
	blocks := fx.blockIDs(t, "A")
	loc, ok := repo.Chain().LocateBlob(blocks[2])
	if !ok {
		t.Fatal("block 2 is not in the index")
	}
	flipAt(t, filepath.Join(dir, loc.Pack), loc.Offset+loc.Length/2)
	vr, err := repo.Verify(ctx, snapshot.VerifyOptions{})
	if err != nil || vr.OK() {
		t.Fatalf("verify after damage: %+v, %v", vr.Damage, err)
	}
	if rr, err := repo.RepairFromDisks(ctx, vr, []string{disk}); err != nil || rr.Repaired == 0 {
		t.Fatalf("repair: %+v, %v", rr, err)
	}
	if vr, err := repo.Verify(ctx, snapshot.VerifyOptions{}); err != nil || !vr.OK() {
		t.Fatalf("verify after repair: %+v, %v", vr.Damage, err)
	}
	restoresAll("after repair", repo)

	// Credentials through the snapshot API: a key added, the password
	// changed; the key opens it, the old password does not.
	key, _ := chain.NewKey()
	keyCred, _ := chain.KeyCredential(key)
	if _, err := repo.AddKey(ctx, keyCred, chain.KeyOptions{Label: "backup"}); err != nil {
		t.Fatal(err)
	}
	newPassword, _ := chain.PasswordCredential("pw two")
	if _, err := repo.ChangeKey(ctx, newPassword, chain.KeyOptions{Argon2: cheap}); err != nil {
		t.Fatal(err)
	}
	keys, err := repo.Keys(ctx)
	if err != nil || len(keys) != 2 || keys[1].ID != repo.UsedKey() || keys[0].Label != "backup" {
		t.Fatalf("keys: %+v, %v (in use %s)", keys, err, repo.UsedKey())
	}
	repo.Close()
	if _, err := snapshot.OpenWithPassword(ctx, dir, "pw one"); !errors.Is(err, snapshot.ErrWrongKey) {
		t.Fatalf("open with the changed password: %v", err)
	}
	if _, err := snapshot.OpenWithPassword(ctx, dir, "pw two"); err != nil {
		t.Fatal(err)
	}

	// Every index file lost: the packs' sealed headers say what they hold.
	if err := os.RemoveAll(filepath.Join(dir, "index")); err != nil {
		t.Fatal(err)
	}
	byKey, err := snapshot.OpenWithKey(ctx, dir, key)
	if err != nil {
		t.Fatal(err)
	}
	defer byKey.Close()
	restoresAll("without index files", byKey)
}
