package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/internal/systest"
)

// twoPoints makes a repository with two restore points of one disk and
// returns the repository, the IDs and the images.
func twoPoints(t *testing.T) (string, [2]string, [2][]byte) {
	t.Helper()
	dir := t.TempDir()
	repo, img := filepath.Join(dir, "repo"), filepath.Join(dir, "d.img")
	demodisk.Create(img, 4<<20, 3, demodisk.MixedImage)
	mustCLI(t, "init", "-repo", repo)
	var ids [2]string
	var images [2][]byte
	for i := range 2 {
		if i == 1 {
			demodisk.Scatter(img, 0.02, 8)
		}
		var rp struct{ ID string }
		json.Unmarshal([]byte(mustCLI(t, "create", "-repo", repo, "-collection", "vm", "-json", "d="+img)), &rp)
		ids[i] = rp.ID
		images[i] = readAll(t, img)
	}
	return repo, ids, images
}

func TestCLIDiffRestoreCopyPrune(t *testing.T) {
	repo, ids, images := twoPoints(t)
	dir := t.TempDir()

	// diff prints a ranges file; create -changed could read it back.
	out := mustCLI(t, "diff", "-repo", repo, "-collection", "vm", "-from", ids[0], "-to", ids[1], "-disk", "d")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) == 0 || len(strings.Fields(lines[0])) != 2 {
		t.Fatalf("diff output: %q", out)
	}
	var ranges []map[string]int64
	json.Unmarshal([]byte(mustCLI(t, "diff", "-repo", repo, "-collection", "vm", "-from", ids[0], "-to", ids[1], "-disk", "d", "-json")), &ranges)
	if len(ranges) != len(lines) {
		t.Errorf("diff -json has %d ranges, text %d", len(ranges), len(lines))
	}

	// Roll a restored disk forward with -incremental -from: it reads nothing.
	target := filepath.Join(dir, "t.img")
	mustCLI(t, "restore", "-repo", repo, "-collection", "vm", "-point", ids[0], "-disk", "d", "-to", target)
	out = mustCLI(t, "restore", "-repo", repo, "-collection", "vm", "-point", ids[1], "-disk", "d", "-to", target, "-incremental", "-from", ids[0])
	if !strings.Contains(out, "blocks read 0,") || !bytes.Equal(readAll(t, target), images[1]) {
		t.Fatalf("restore -incremental -from: %s", out)
	}
	if code, _, errOut := cli(t, "restore", "-repo", repo, "-collection", "vm", "-point", ids[1], "-disk", "d", "-to", target, "-from", ids[0]); code != 2 {
		t.Errorf("-from without -incremental: exit %d %s", code, errOut)
	}

	// Copy to another repository, then prune the source.
	other := filepath.Join(dir, "dr")
	mustCLI(t, "init", "-repo", other)
	out = mustCLI(t, "copy", "-repo", repo, "-collection", "vm", "-point", ids[1], "-to-repo", other, "-to-collection", "vm-dr")
	if !strings.Contains(out, "moved") {
		t.Errorf("copy: %s", out)
	}
	restored := filepath.Join(dir, "dr.img")
	mustCLI(t, "restore", "-repo", other, "-collection", "vm-dr", "-point", ids[1], "-disk", "d", "-to", restored)
	if !bytes.Equal(readAll(t, restored), images[1]) {
		t.Fatal("restore from the copy differs")
	}
	out = mustCLI(t, "prune", "-repo", repo, "-collection", "vm", "-keep-last", "1", "-dry-run")
	if !strings.Contains(out, "would delete") || !strings.Contains(out, ids[0]) {
		t.Errorf("prune -dry-run: %s", out)
	}
	mustCLI(t, "prune", "-repo", repo, "-collection", "vm", "-keep-last", "1")
	var list []struct{ ID string }
	json.Unmarshal([]byte(mustCLI(t, "list", "-repo", repo, "-collection", "vm", "-json")), &list)
	if len(list) != 1 || list[0].ID != ids[1] {
		t.Errorf("after prune -keep-last 1: %+v", list)
	}
	if code, _, _ := cli(t, "prune", "-repo", repo, "-collection", "vm"); code != 2 {
		t.Errorf("prune without rules: exit %d, want 2", code)
	}
}

// serve-nbd exports a restore point that qemu-img reads bit-exact.
func TestCLIServeNBD(t *testing.T) {
	systest.RequireTool(t, "qemu-img", "qemu-utils")
	repo, ids, images := twoPoints(t)
	serving := startServeNBD(t, "-repo", repo, "-collection", "vm", "-point", ids[0], "-disk", "d")
	url := serving.url
	out := filepath.Join(t.TempDir(), "copy.img")
	if b, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "raw", url, out).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert %s: %v\n%s", url, err, b)
	}
	if !bytes.Equal(readAll(t, out), images[0]) {
		t.Fatal("qemu-img read something other than the restore point")
	}
	if code, errOut := serving.stop(); code != 0 {
		t.Errorf("serve-nbd exit %d: %s", code, errOut)
	}
}
