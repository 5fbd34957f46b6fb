package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/internal/systest"
	"github.com/diskpoint/diskpoint/snapshot"
)

// startStorageDaemon starts qemu-storage-daemon on a new 16 MiB qcow2,
// node disk0, with QMP and an NBD server (and a writable export "w" of
// disk0 for the test's writes), and returns the two sockets.
func startStorageDaemon(t *testing.T) (qmp, nbd string) {
	t.Helper()
	systest.RequireTool(t, "qemu-storage-daemon", "qemu-system-common")
	systest.RequireTool(t, "qemu-img", "qemu-utils")
	systest.RequireTool(t, "qemu-io", "qemu-utils")
	dir := t.TempDir()
	image, pid := filepath.Join(dir, "disk.qcow2"), filepath.Join(dir, "pid")
	qmp, nbd = filepath.Join(dir, "qmp.sock"), filepath.Join(dir, "nbd.sock")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", image, "16M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	cmd := exec.Command("qemu-storage-daemon",
		"--blockdev", "driver=file,node-name=file0,filename="+image,
		"--blockdev", "driver=qcow2,node-name=disk0,file=file0",
		"--nbd-server", "addr.type=unix,addr.path="+nbd,
		"--export", "type=nbd,id=w,node-name=disk0,name=w,writable=on",
		"--chardev", "socket,id=qmp0,path="+qmp+",server=on,wait=off",
		"--monitor", "chardev=qmp0", "--pidfile", pid)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	// The pid file is written once the sockets listen.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := os.Stat(pid); err == nil {
			return qmp, nbd
		}
		select {
		case err := <-exited:
			t.Fatalf("qemu-storage-daemon exited: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("qemu-storage-daemon did not start")
		}
	}
}

// create -qmp takes pull-mode restore points: the second reads only the
// extents of the bitmap the first started, and the points restore what
// was written.
func TestCLICreateQMPPullMode(t *testing.T) {
	qmp, nbd := startStorageDaemon(t)
	repo := filepath.Join(t.TempDir(), "repo")
	mustBinary(t, nil, "init", "-repo", repo)
	write := func(cmd string) {
		if out, err := exec.Command("qemu-io", "-f", "raw", "-c", cmd, "nbd+unix:///w?socket="+nbd).CombinedOutput(); err != nil {
			t.Fatalf("qemu-io %s: %v: %s", cmd, err, out)
		}
	}
	var points []snapshot.RestorePoint
	for _, w := range []string{"write -P 0x11 0 4M", "write -P 0x22 8M 256k"} {
		write(w)
		var rp snapshot.RestorePoint
		out := mustBinary(t, nil, "create", "-repo", repo, "-collection", "vm", "-qmp", qmp, "-qmp-nbd", nbd, "-json", "os=disk0")
		if err := json.Unmarshal([]byte(out), &rp); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		points = append(points, rp)
	}
	first, _ := points[0].Disk("os")
	second, _ := points[1].Disk("os")
	if first.Capture != "frozen-view" || first.ChangeSource != "hash" || !strings.HasPrefix(first.Bitmap, "diskpoint-") || points[0].Consistency != "crash" {
		t.Errorf("first point: %+v, consistency %s", first, points[0].Consistency)
	}
	if second.ChangeSource != "bitmap" || second.BitmapRead != first.Bitmap || second.Bitmap == first.Bitmap || second.ChangedBytes != 256<<10 {
		t.Errorf("second point: %+v (first recorded bitmap %q)", second, first.Bitmap)
	}
	out := filepath.Join(t.TempDir(), "os.img")
	mustBinary(t, nil, "restore", "-repo", repo, "-collection", "vm", "-point", points[1].ID, "-disk", "os", "-to", out)
	img, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if img[4<<20-1] != 0x11 || img[4<<20] != 0 || img[8<<20] != 0x22 || img[8<<20+256<<10-1] != 0x22 || img[8<<20+256<<10] != 0 {
		t.Error("the restored disk does not hold what was written")
	}

	if code, _, errOut := runBinary(t, nil, "create", "-repo", repo, "-collection", "vm", "-qmp", qmp, "os=disk0", "data=disk1"); code != 2 || !strings.Contains(errOut, "-qmp-nbd") {
		t.Errorf("-qmp without -qmp-nbd and with two disks: exit %d, %s", code, errOut)
	}
	if code, _, errOut := runBinary(t, nil, "create", "-repo", repo, "-collection", "vm", "-qmp", qmp, "-qmp-nbd", nbd, "-consistency", "filesystem", "-freeze", t.TempDir(), "os=disk0"); code != 2 || !strings.Contains(errOut, "hooks") {
		t.Errorf("-qmp with a file-system freeze: exit %d, %s", code, errOut)
	}
}
