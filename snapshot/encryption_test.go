package snapshot_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/consistency"
	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

func newEncryptedRepo(t *testing.T, key []byte) (*snapshot.Repository, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	repo, err := snapshot.Init(context.Background(), dir, snapshot.InitOptions{BlockSize: testBlockSize, Key: key, Format: testFormat()})
	if err != nil {
		t.Fatal(err)
	}
	return repo, dir
}

// allStored concatenates every stored object but the config.
func allStored(t *testing.T, dir string) []byte {
	t.Helper()
	var all []byte
	filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Name() != "config" {
			all = append(all, readFile(t, path)...)
		}
		return nil
	})
	return all
}

func TestEncryptedRepository(t *testing.T) {
	ctx := context.Background()
	key, _ := chain.NewKey()
	repo, dir := newEncryptedRepo(t, key)
	vm, _ := repo.Collection("secret-vm")
	work := t.TempDir()
	disk := filepath.Join(work, "d.img")
	demodisk.Create(disk, 2<<20, 5, demodisk.Mix{Random: 1}) // random data is stored as is, unless encrypted
	marker := []byte("TOP-SECRET-MARKER-0123456789abcdefTOP-SECRET-MARKER-0123456789ab")
	f, _ := os.OpenFile(disk, os.O_WRONLY, 0)
	f.WriteAt(marker, 1<<20+100)
	f.Close()
	pre := filepath.Join(work, "pre.sh")
	os.WriteFile(pre, []byte("#!/bin/sh\necho script-output-that-is-secret\n"), 0o700)

	rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}, VMConfig: []byte("vm-config-secret"),
		Consistency: consistency.Application,
		Hooks:       []consistency.Hook{&consistency.ScriptHook{Config: consistency.ScriptConfig{PreScriptLocation: pre, TimeoutInSeconds: 10}}}})
	if err != nil {
		t.Fatal(err)
	}
	image := readFile(t, disk)
	restoreAndCompare(t, vm, rp.ID, "d", image)

	// Nothing stored shows the data, the manifest, or plain chunk names.
	stored := allStored(t, dir)
	for _, plain := range [][]byte{marker, image[:4096], []byte("vm-config-secret"), []byte(`"changed_bytes"`), []byte("script-output-that-is-secret"), []byte(chain.Hash(image[:testBlockSize]).String())} {
		if bytes.Contains(stored, plain) {
			t.Errorf("stored bytes contain plaintext %q", plain[:min(len(plain), 24)])
		}
	}
	if id := rp.Disks[0].Root; id == (chain.ID{}) {
		t.Fatal("no root")
	}
	// Dedup still works: an unchanged disk stores nothing.
	again, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}})
	if err != nil || again.Disks[0].StoredBytes != 0 {
		t.Fatalf("second create of an unchanged disk stored %d bytes, %v", again.Disks[0].StoredBytes, err)
	}

	// The key is needed, and only the right one opens it.
	if _, err := snapshot.Open(ctx, dir); !errors.Is(err, snapshot.ErrKeyRequired) {
		t.Errorf("open without a key: %v", err)
	}
	other, _ := chain.NewKey()
	if _, err := snapshot.OpenWithKey(ctx, dir, other); !errors.Is(err, snapshot.ErrWrongKey) {
		t.Errorf("open with another key: %v", err)
	}
	reopened, err := snapshot.OpenWithKey(ctx, dir, key)
	if err != nil {
		t.Fatal(err)
	}
	vm, _ = reopened.Collection("secret-vm")
	if cfg, err := vm.VMConfig(ctx, mustGet(t, vm, rp.ID)); err != nil || string(cfg) != "vm-config-secret" {
		t.Errorf("VM config: %q %v", cfg, err)
	}
	if runs, err := hookRuns(ctx, vm); err != nil || len(runs) < 2 || !strings.Contains(runs[1].Output, "script-output-that-is-secret") {
		t.Errorf("hook log of an encrypted repository: %+v %v", runs, err)
	}
	// Verify and GC work; a flipped byte in a sealed chunk is caught.
	if err := vm.Delete(ctx, again.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := reopened.GC(ctx, snapshot.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	if vr, err := reopened.Verify(ctx, snapshot.VerifyOptions{}); err != nil || !vr.OK() {
		t.Fatalf("verify: %+v %v", vr, err)
	}
	restoreAndCompare(t, vm, rp.ID, "d", image)
	ids := (&corruptionFixture{repo: reopened, points: map[string]*snapshot.RestorePoint{"A": rp}}).blockIDs(t, "A")
	loc, _ := reopened.Chain().LocateBlob(ids[3])
	flipAt(t, filepath.Join(dir, loc.Pack), loc.Offset+loc.Length/2)
	vr, err := reopened.Verify(ctx, snapshot.VerifyOptions{})
	if err != nil || vr.OK() || !strings.Contains(vr.Damage[0].Object, ids[3].String()) {
		t.Fatalf("verify after a flipped sealed byte: %+v %v", vr, err)
	}
	if _, err := vm.RestoreDisk(ctx, snapshot.RestoreOptions{Point: rp.ID, Disk: "d", Path: filepath.Join(work, "out.img")}); !errors.Is(err, chain.ErrCorrupt) {
		t.Errorf("restore across a damaged sealed chunk: %v", err)
	}
}

func TestCopyBetweenKeys(t *testing.T) {
	ctx := context.Background()
	key, _ := chain.NewKey()
	src, _ := newEncryptedRepo(t, key)
	vm, _ := src.Collection("vm")
	disk := makeDisk(t, t.TempDir(), "d.img", 1<<20, 6)
	rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}, VMConfig: []byte("vm config")})
	if err != nil {
		t.Fatal(err)
	}
	same, _ := newEncryptedRepo(t, key)
	dr, _ := same.Collection("dr")
	if _, _, err := vm.Copy(ctx, rp.ID, dr, snapshot.CopyOptions{}); err != nil {
		t.Fatalf("copy to a repository with the same key: %v", err)
	}
	restoreAndCompare(t, dr, rp.ID, "d", readFile(t, disk))
	// Chunk IDs are keyed: a copy to a repository with another key, or none,
	// names every chunk again and rebuilds the block maps.
	otherKey, _ := chain.NewKey()
	plain := must(newRepo(t))
	for _, target := range []*snapshot.Repository{must(newEncryptedRepo(t, otherKey)), plain} {
		c, _ := target.Collection("dr")
		copied, stats, err := vm.Copy(ctx, rp.ID, c, snapshot.CopyOptions{FlushEvery: 64 << 10})
		if err != nil {
			t.Fatalf("copy between differently keyed repositories: %v", err)
		}
		if stats.Blobs == 0 || stats.Covered != rp.Disks[0].Size || copied.ID != rp.ID || copied.Disks[0].Root == rp.Disks[0].Root {
			t.Errorf("copy across keys: %+v, root %s (source %s)", stats, copied.Disks[0].Root, rp.Disks[0].Root)
		}
		restoreAndCompare(t, c, rp.ID, "d", readFile(t, disk))
		if cfg, err := c.VMConfig(ctx, copied); string(cfg) != "vm config" || err != nil {
			t.Errorf("VM config after a copy across keys: %q, %v", cfg, err)
		}
		if report, err := target.Verify(ctx, snapshot.VerifyOptions{}); err != nil || !report.OK() {
			t.Errorf("verify of the copy across keys: %+v, %v", report.Damage, err)
		}
		if _, stats, err := vm.Copy(ctx, rp.ID, c, snapshot.CopyOptions{}); err != nil || stats != (chain.CopyStats{}) {
			t.Errorf("second copy across keys: %+v, %v; want nothing moved", stats, err)
		}
	}
	// And back from the unencrypted one into a third key's repository.
	from, _ := plain.Collection("dr")
	third, _ := chain.NewKey()
	back, _ := must(newEncryptedRepo(t, third)).Collection("back")
	if _, _, err := from.Copy(ctx, rp.ID, back, snapshot.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	restoreAndCompare(t, back, rp.ID, "d", readFile(t, disk))
}

func must(r *snapshot.Repository, _ string) *snapshot.Repository { return r }
