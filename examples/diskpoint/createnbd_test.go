package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/internal/systest"
)

// create takes a disk by its NBD URI (here a qcow2 image qemu-nbd serves),
// and the restore point restores to the bytes qemu-img convert makes of
// it. With -bitmap, the first point says why it could not use the bitmap,
// and the second uses it.
func TestCLICreateFromNBD(t *testing.T) {
	for _, tool := range []string{"qemu-nbd", "qemu-io", "qemu-img"} {
		systest.RequireTool(t, tool, "qemu-utils")
	}
	dir := t.TempDir()
	image, raw := filepath.Join(dir, "os.qcow2"), filepath.Join(dir, "os.raw")
	for _, args := range [][]string{
		{"qemu-img", "create", "-q", "-f", "qcow2", image, "8M"},
		{"qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 1M", "-c", "write -P 0x33 7M 64k", image},
		{"qemu-img", "convert", "-f", "qcow2", "-O", "raw", image, raw},
		{"qemu-img", "bitmap", "--add", image, "b0"},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	sock, pidFile := filepath.Join(dir, "nbd.sock"), filepath.Join(dir, "pid")
	systest.StartDaemon(t, pidFile, "qemu-nbd", "--pid-file", pidFile, "-t", "-e", "8", "-r", "-f", "qcow2", "-B", "b0", "-k", sock, image)

	repo := filepath.Join(dir, "repo")
	mustBinary(t, nil, "init", "-repo", repo)
	var rp struct {
		ID    string
		Disks []struct {
			Size         int64
			ChangeSource string `json:"change_source"`
			Bitmap       string
		}
	}
	out := mustBinary(t, nil, "create", "-repo", repo, "-collection", "vm", "-bitmap", "os=b0", "os=nbd+unix:///?socket="+sock)
	if !strings.Contains(out, "os: no previous restore point of the disk to read bitmap \"b0\" against") {
		t.Errorf("create -bitmap without a previous point said %s, want the reason it read every block", out)
	}
	out = mustBinary(t, nil, "create", "-repo", repo, "-collection", "vm", "-json", "-bitmap", "os=b0", "os=nbd+unix:///?socket="+sock)
	if err := json.Unmarshal([]byte(out), &rp); err != nil || len(rp.Disks) != 1 || rp.Disks[0].Size != 8<<20 {
		t.Fatalf("create said %s (%v)", out, err)
	}
	if d := rp.Disks[0]; d.ChangeSource != "bitmap" || d.Bitmap != "b0" {
		t.Errorf("create -bitmap after a point taken with it: change source %q, bitmap %q; want bitmap, b0", d.ChangeSource, d.Bitmap)
	}
	restored := filepath.Join(dir, "restored.img")
	mustBinary(t, nil, "restore", "-repo", repo, "-collection", "vm", "-point", rp.ID, "-disk", "os", "-to", restored)
	want, _ := os.ReadFile(raw)
	if got, _ := os.ReadFile(restored); !bytes.Equal(got, want) {
		t.Fatal("the restored disk differs from qemu-img convert's image of the qcow2")
	}
	if code, _, errOut := runBinary(t, nil, "create", "-repo", repo, "-collection", "vm", "-changed", "os="+raw, "os=nbd+unix:///?socket="+sock); code != 2 || !strings.Contains(errOut, "-changed") {
		t.Errorf("-changed for an NBD disk: exit %d, %s; want a usage error", code, errOut)
	}
	if code, _, errOut := runBinary(t, nil, "create", "-repo", repo, "-collection", "vm", "-bitmap", "os=b0", "os="+raw); code != 2 || !strings.Contains(errOut, "-bitmap") {
		t.Errorf("-bitmap for a disk file: exit %d, %s; want a usage error", code, errOut)
	}
	if code, _, errOut := runBinary(t, nil, "create", "-repo", repo, "-collection", "vm", "os=nbd+unix:///?socket="+filepath.Join(dir, "none.sock")); code == 0 || !strings.Contains(errOut, "none.sock") {
		t.Errorf("an NBD server that is not there: exit %d, %s; want an error naming it", code, errOut)
	}
}
