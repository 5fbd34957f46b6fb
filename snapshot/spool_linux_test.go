package snapshot_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/consistency"
	"github.com/diskpoint/diskpoint/snapshot"
)

// spoolFiles counts this process's open spool files in dir: the spool
// unlinks its file as soon as it creates it, so an open descriptor is all
// that is left of it, and all that could leak.
func spoolFiles(t *testing.T, dir string) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, filepath.Join(dir, ".tmp-diskpoint-spool-")) && strings.HasSuffix(target, " (deleted)") {
			n++
		}
	}
	return n
}

// leftInDir lists the files under dir whose names start with '.tmp-'.
func leftInDir(t *testing.T, dir string) []string {
	t.Helper()
	var left []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".tmp-") {
			left = append(left, path)
		}
		return nil
	})
	return left
}

// Changed blocks beyond SpoolMemory go to a temporary file beside a local
// repository (else in the temporary directory) while the disk is read
// inside the freeze window; the point restores bit-exact, and the file is
// gone once Create returns, whether the create stored its restore point,
// failed storing it, or was cancelled.
func TestSpoolSpillsToAFileThatIsRemoved(t *testing.T) {
	errInjected := errors.New("injected pack write failure")
	for _, tc := range []struct {
		name    string
		local   bool
		outcome string // "stored", "failed" or "cancelled"
	}{
		{"local repository, stored", true, "stored"},
		{"local repository, failed", true, "failed"},
		{"local repository, cancelled", true, "cancelled"},
		{"repository elsewhere, stored", false, "stored"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repoDir, tmpDir := filepath.Join(t.TempDir(), "repo"), t.TempDir()
			t.Setenv("TMPDIR", tmpDir)
			var store chain.Store = chain.NewMemStore()
			spoolDir := tmpDir
			if tc.local {
				local, err := chain.NewLocalStore(repoDir)
				if err != nil {
					t.Fatal(err)
				}
				store, spoolDir = local, repoDir
			}
			gate, vm := newThawGatedRepo(t, store, tc.local)
			disk := makeDisk(t, noReflinkDir(t), "d.img", 8<<20, 13)
			want := readFile(t, disk)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			seen := -1
			gate.afterThaw = func(context.Context) error {
				seen = spoolFiles(t, spoolDir)
				switch tc.outcome {
				case "failed":
					return errInjected
				case "cancelled":
					cancel()
				}
				return nil
			}
			rp, err := createWithin(t, ctx, vm, snapshot.CreateOptions{
				Disks:       []snapshot.DiskSource{{Name: "d", Path: disk}},
				Consistency: consistency.FileSystem,
				Hooks:       []consistency.Hook{gate.hook()},
				MaxFreeze:   5 * time.Second,
				SpoolMemory: 256 << 10,
			})
			switch {
			case tc.outcome == "stored" && err != nil:
				t.Fatal(err)
			case tc.outcome == "failed" && !errors.Is(err, errInjected):
				t.Fatalf("create with a failing pack write: %v", err)
			case tc.outcome == "cancelled" && !errors.Is(err, context.Canceled):
				t.Fatalf("create cancelled while storing: %v", err)
			}
			if seen != 1 {
				t.Errorf("%d spool files open in %s while storing, want 1", seen, spoolDir)
			}
			if n := spoolFiles(t, spoolDir); n != 0 {
				t.Errorf("%d spool files still open in %s after the create", n, spoolDir)
			}
			for _, dir := range []string{repoDir, tmpDir} {
				if left := leftInDir(t, dir); len(left) > 0 {
					t.Errorf("left behind: %v", left)
				}
			}
			if tc.outcome == "stored" {
				restoreAndCompare(t, vm, rp.ID, "d", want)
			}
		})
	}
}
