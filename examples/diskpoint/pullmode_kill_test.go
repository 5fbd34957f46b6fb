package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/nbd"
	"github.com/diskpoint/diskpoint/snapshot"
)

// A create -qmp killed with SIGKILL while its frozen view is exported
// leaves the daemon with the filter, the export and two bitmaps; the next
// create -qmp cleans them up, merges the killed run's bitmap back, and
// loses no write made after the killed run's transaction.
func TestCLICreateQMPKilledMidBackupLosesNoChange(t *testing.T) {
	qmp, nbdSock := startStorageDaemon(t)
	repo := filepath.Join(t.TempDir(), "repo")
	mustBinary(t, nil, "init", "-repo", repo)
	write := func(cmd string) {
		t.Helper()
		if out, err := exec.Command("qemu-io", "-f", "raw", "-c", cmd, "nbd+unix:///w?socket="+nbdSock).CombinedOutput(); err != nil {
			t.Fatalf("qemu-io %s: %v: %s", cmd, err, out)
		}
	}
	create := []string{"create", "-repo", repo, "-collection", "vm", "-qmp", qmp, "-qmp-nbd", nbdSock, "-json", "os=disk0"}
	write("write -P 0x11 0 12M") // enough for the kill to land while the view is read
	mustBinary(t, nil, create...)
	write("write -P 0x22 2M 10M") // not over 1M: the write after the kill must be found by its own bitmap

	// Kill the next create as soon as its export is up: the transaction
	// has run, nothing is torn down.
	killed := false
	for attempt := 0; attempt < 5 && !killed; attempt++ {
		child := startChild(t, create...)
		done := make(chan struct{})
		go func() { child.cmd.Wait(); close(done) }()
	poll:
		for {
			exports, err := nbd.List(context.Background(), "nbd+unix:///?socket="+nbdSock)
			if err == nil && hasPrefixed(exports, "dp-export-") {
				child.cmd.Process.Kill()
				<-done
				killed = !child.cmd.ProcessState.Success()
				break
			}
			select {
			case <-done:
				break poll // it finished first: try again
			case <-time.After(time.Millisecond): // polling another process's progress
			}
		}
	}
	if !killed {
		t.Skip("the create finished before a kill could land in 5 attempts")
	}
	write("write -P 0x33 1M 64k") // after the killed run's transaction: only its bitmap has it

	var rp snapshot.RestorePoint
	if err := json.Unmarshal([]byte(mustBinary(t, nil, create...)), &rp); err != nil {
		t.Fatal(err)
	}
	d, _ := rp.Disk("os")
	if d.ChangeSource != "bitmap" {
		t.Errorf("the create after the killed one: change source %q (%s)", d.ChangeSource, d.ChangeReason)
	}
	out := filepath.Join(t.TempDir(), "os.img")
	mustBinary(t, nil, "restore", "-repo", repo, "-collection", "vm", "-point", rp.ID, "-disk", "os", "-to", out)
	img, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if img[1<<20] != 0x33 || img[1<<20+64<<10-1] != 0x33 || img[0] != 0x11 || img[2<<20] != 0x22 || img[12<<20-1] != 0x22 {
		t.Errorf("the restore point lost writes: bytes %#x %#x %#x %#x", img[0], img[1<<20], img[1<<20+64<<10-1], img[2<<20])
	}
}

func hasPrefixed(names []string, prefix string) bool {
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			return true
		}
	}
	return false
}
