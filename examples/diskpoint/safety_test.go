package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/internal/systest"
)

// unlock removes the locks of operations that died (stale) and leaves live ones;
// unlock -all removes those too.
func TestCLIUnlock(t *testing.T) {
	repo := filepath.Join(t.TempDir(), "repo")
	mustCLI(t, "init", "-repo", repo)
	store, err := chain.NewLocalStore(repo)
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	plant := func(name string, info chain.LockInfo) {
		data, _ := json.Marshal(info)
		if err := store.Put(context.Background(), "locks/"+name, data); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	long := now.Add(-2 * chain.LockStaleAfter) // its holder stopped refreshing it long ago
	plant("dead", chain.LockInfo{Operation: "create", Host: host, PID: 1 << 30, Created: long, Refreshed: long})
	plant("live", chain.LockInfo{Operation: "gc", Exclusive: true, Host: host, PID: os.Getppid(), Created: now, Refreshed: now})

	if out := mustCLI(t, "unlock", "-repo", repo); !strings.Contains(out, "removed 1 stale lock") {
		t.Errorf("unlock said %q", out)
	}
	if _, err := os.Stat(filepath.Join(repo, "locks", "live")); err != nil {
		t.Fatalf("unlock removed a live lock: %v", err)
	}
	if code, _, errOut := cli(t, "gc", "-repo", repo); code != 11 || !strings.Contains(errOut, "locked") {
		t.Fatalf("gc beside a live exclusive lock: exit %d, %s", code, errOut)
	}
	if out := mustCLI(t, "unlock", "-repo", repo, "-all"); !strings.Contains(out, "removed 1 lock") {
		t.Errorf("unlock -all said %q", out)
	}
	mustCLI(t, "gc", "-repo", repo)
}

// gc refuses while a manifest is damaged, naming it; -ignore-damaged
// treats the point as deleted and sweeps.
func TestCLIGCIgnoreDamaged(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	img := filepath.Join(dir, "d.img")
	if err := demodisk.Create(img, 1<<20, 5, demodisk.MixedImage); err != nil {
		t.Fatal(err)
	}
	mustCLI(t, "init", "-repo", repo)
	var rp struct{ ID string }
	if err := json.Unmarshal([]byte(mustCLI(t, "create", "-repo", repo, "-collection", "vm", "-json", "d="+img)), &rp); err != nil {
		t.Fatal(err)
	}
	manifest := filepath.Join(repo, "manifests", "vm", rp.ID)
	if err := os.WriteFile(manifest, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := cli(t, "gc", "-repo", repo); code != 1 || !strings.Contains(errOut, "manifests/vm/"+rp.ID) {
		t.Fatalf("gc beside a damaged manifest: exit %d, %s", code, errOut)
	}
	out := mustCLI(t, "gc", "-repo", repo, "-ignore-damaged", "-json")
	var report struct {
		BlobsRemoved int      `json:"blobs_removed"`
		Damaged      []string `json:"damaged_manifests_ignored"`
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil || report.BlobsRemoved == 0 || len(report.Damaged) != 1 {
		t.Fatalf("gc -ignore-damaged printed %s (%v)", out, err)
	}
}

// An NBD export of a restore point that is deleted and garbage-collected
// meanwhile keeps serving it bit-exact; once the export stops, gc reclaims
// the point's space.
func TestCLIExportOfADeletedPoint(t *testing.T) {
	systest.RequireTool(t, "qemu-img", "qemu-utils")
	repo, ids, images := twoPoints(t)
	serving := startServeNBD(t, "-repo", repo, "-collection", "vm", "-point", ids[0], "-disk", "d")
	url := serving.url

	mustCLI(t, "delete", "-repo", repo, "-collection", "vm", "-point", ids[0])
	mustCLI(t, "gc", "-repo", repo)
	out := filepath.Join(t.TempDir(), "copy.img")
	if b, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "raw", url, out).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert %s after the point was deleted and gc ran: %v\n%s", url, err, b)
	}
	if !bytes.Equal(readAll(t, out), images[0]) {
		t.Fatal("the export served something other than its restore point after gc")
	}
	if code, errOut := serving.stop(); code != 0 {
		t.Fatalf("serve-nbd exit %d: %s", code, errOut)
	}
	var report struct {
		BlobsRemoved int `json:"blobs_removed"`
	}
	if err := json.Unmarshal([]byte(mustCLI(t, "gc", "-repo", repo, "-json")), &report); err != nil || report.BlobsRemoved == 0 {
		t.Fatalf("gc after the export stopped: %+v, %v; want the deleted point's blobs removed", report, err)
	}
}
