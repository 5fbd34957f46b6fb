package snapshot_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/diskpoint/diskpoint/snapshot"
)

// A restore never destroys silently: an existing file is replaced only
// with Overwrite and keeps its permissions; a link is followed, never
// replaced; a directory receives DISK.img.
func TestRestoreTargets(t *testing.T) {
	ctx := context.Background()
	vm, ids, images := chainOfThree(t)
	dir := t.TempDir()
	restore := func(path string, opts snapshot.RestoreOptions) error {
		opts.Point, opts.Disk, opts.Path = ids[0], "d", path
		_, err := vm.RestoreDisk(ctx, opts)
		return err
	}
	mustHold := func(path string, want []byte) {
		t.Helper()
		if !bytes.Equal(readFile(t, path), want) {
			t.Fatalf("%s does not hold what it should", path)
		}
	}

	existing := filepath.Join(dir, "existing.img")
	precious := []byte("someone's data")
	os.WriteFile(existing, precious, 0o640)
	if err := restore(existing, snapshot.RestoreOptions{}); !errors.Is(err, snapshot.ErrExists) {
		t.Fatalf("restore onto an existing file: %v, want ErrExists", err)
	}
	mustHold(existing, precious)
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".existing.img.restoring-*")); len(leftovers) > 0 {
		t.Errorf("a refused restore left %v", leftovers)
	}
	if err := os.Chmod(existing, 0o604); err != nil { // past the umask
		t.Fatal(err)
	}
	if err := restore(existing, snapshot.RestoreOptions{Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	mustHold(existing, images[0])
	if fi, _ := os.Stat(existing); fi.Mode().Perm() != 0o604 {
		t.Errorf("the replaced file has mode %v, want 0604", fi.Mode().Perm())
	}

	// Incremental updates an existing target without Overwrite.
	if _, err := vm.RestoreDisk(ctx, snapshot.RestoreOptions{Point: ids[1], Disk: "d", Path: existing, Incremental: true}); err != nil {
		t.Fatal(err)
	}
	mustHold(existing, images[1])

	// A link to a file: the file is written, the link stays (relative links
	// and chains of links too).
	os.Mkdir(filepath.Join(dir, "images"), 0o755)
	linked := filepath.Join(dir, "images", "linked.img")
	os.WriteFile(linked, precious, 0o600)
	os.Symlink("images/linked.img", filepath.Join(dir, "hop"))
	link := filepath.Join(dir, "link")
	os.Symlink("hop", link)
	if err := restore(link, snapshot.RestoreOptions{}); !errors.Is(err, snapshot.ErrExists) {
		t.Fatalf("restore through a link to an existing file: %v, want ErrExists", err)
	}
	if err := restore(link, snapshot.RestoreOptions{Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{link, filepath.Join(dir, "hop")} {
		if fi, err := os.Lstat(l); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("%s was replaced: %v %v", l, fi.Mode(), err)
		}
	}
	mustHold(linked, images[0])

	// A dangling link: the file it names is made.
	dangling := filepath.Join(dir, "dangling")
	os.Symlink(filepath.Join(dir, "images", "new.img"), dangling)
	if err := restore(dangling, snapshot.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	mustHold(filepath.Join(dir, "images", "new.img"), images[0])
	if fi, err := os.Lstat(dangling); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the dangling link was replaced: %v", err)
	}

	// A directory (or a link to one) receives DISK.img, under the same rules.
	into := filepath.Join(dir, "into")
	os.Mkdir(into, 0o755)
	os.Symlink(into, filepath.Join(dir, "intolink"))
	if err := restore(filepath.Join(dir, "intolink"), snapshot.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	mustHold(filepath.Join(into, "d.img"), images[0])
	if err := restore(into, snapshot.RestoreOptions{}); !errors.Is(err, snapshot.ErrExists) {
		t.Fatalf("second restore into the directory: %v, want ErrExists", err)
	}
	if _, err := vm.RestoreDisk(ctx, snapshot.RestoreOptions{Point: ids[2], Disk: "d", Path: into, Incremental: true}); err != nil {
		t.Fatal(err)
	}
	mustHold(filepath.Join(into, "d.img"), images[2])
}
