package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/internal/systest"
)

// requireFilesTools skips a diskpoint files test where it cannot run (not
// root, no FUSE, no loop devices, no sgdisk or mkfs), and fails it under
// CI=true, where .ci/run installs them.
func requireFilesTools(t *testing.T, tools ...string) {
	t.Helper()
	systest.RequireFUSE(t)
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no loop devices: %v", err)
		}
		t.Skipf("skipped: no loop devices: %v", err)
	}
	packages := map[string]string{"sgdisk": "gdisk", "mkfs.ext4": "e2fsprogs", "mkfs.xfs": "xfsprogs"}
	for _, tool := range tools {
		systest.RequireTool(t, tool, packages[tool])
	}
}

// makeTree writes a small tree of files under dir: text and random bytes,
// nested directories, modes other than the default, a symbolic link, and
// old modification times; seed varies the content.
func makeTree(t *testing.T, dir string, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	write := func(name string, data []byte, mode fs.FileMode) {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(path, mode)
	}
	for i := range 12 {
		data := make([]byte, rng.IntN(200<<10))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		write(fmt.Sprintf("blobs/b%02d.bin", i), data, 0o640)
	}
	write("etc/fstab", []byte(fmt.Sprintf("UUID=%x / ext4 defaults 0 1\n", rng.Uint64())), 0o644)
	write("etc/app/config.toml", bytes.Repeat([]byte("key = \"value\"\n"), 1+rng.IntN(500)), 0o600)
	write("bin/run", []byte("#!/bin/sh\necho hello\n"), 0o755)
	write("empty", nil, 0o444)
	if err := os.Symlink("../etc/fstab", filepath.Join(dir, "bin", "fstab-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	os.Chtimes(filepath.Join(dir, "etc", "fstab"), old, old)
	os.Chmod(filepath.Join(dir, "etc", "app"), 0o750)
}

// compareTrees fails the test unless got holds what want does: the same
// names, types, permissions, sizes, bytes, link targets and (for files)
// modification times.
func compareTrees(t *testing.T, want, got string) {
	t.Helper()
	seen := map[string]bool{}
	problems := 0
	report := func(format string, args ...any) {
		if problems++; problems <= 10 {
			t.Errorf(format, args...)
		}
	}
	filepath.WalkDir(want, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(want, path)
		seen[rel] = true
		wi, _ := d.Info()
		gi, err := os.Lstat(filepath.Join(got, rel))
		if err != nil {
			report("%s: %v", rel, err)
			return nil
		}
		if wi.Mode() != gi.Mode() {
			report("%s: mode %v, want %v", rel, gi.Mode(), wi.Mode())
		}
		switch {
		case wi.Mode().IsRegular():
			a, _ := os.ReadFile(path)
			b, _ := os.ReadFile(filepath.Join(got, rel))
			if !bytes.Equal(a, b) {
				report("%s: %d bytes differ from the %d wanted", rel, len(b), len(a))
			}
			if !wi.ModTime().Truncate(time.Second).Equal(gi.ModTime().Truncate(time.Second)) {
				report("%s: modified %v, want %v", rel, gi.ModTime(), wi.ModTime())
			}
		case wi.Mode()&fs.ModeSymlink != 0:
			a, _ := os.Readlink(path)
			b, _ := os.Readlink(filepath.Join(got, rel))
			if a != b {
				report("%s: link to %q, want %q", rel, b, a)
			}
		}
		return nil
	})
	filepath.WalkDir(got, func(path string, d fs.DirEntry, err error) error {
		if rel, _ := filepath.Rel(got, path); err == nil && !seen[rel] {
			report("%s: not in the original", rel)
		}
		return nil
	})
}

// writeAt copies the file src into dst at offset, leaving its zero
// stretches as holes.
func writeAt(t *testing.T, src, dst string, offset int64) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const chunk = 64 << 10
	for off := 0; off < len(data); off += chunk {
		part := data[off:min(off+chunk, len(data))]
		if bytes.ContainsFunc(part, func(r rune) bool { return r != 0 }) {
			if _, err := f.WriteAt(part, offset+int64(off)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// runTool runs a program and fails the test if it fails.
func runTool(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// ext4Image makes a file system image of size bytes holding the tree src.
func ext4Image(t *testing.T, path string, size int64, src string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	f.Close()
	runTool(t, "mkfs.ext4", "-q", "-F", "-d", src, path)
}

// leftBehind lists the mounts and loop devices diskpoint files left: any
// whose path has its work directory's prefix in it.
func leftBehind(t *testing.T) []string {
	t.Helper()
	var left []string
	info, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(info), "\n") {
		if strings.Contains(line, "diskpoint-files-") {
			left = append(left, line)
		}
	}
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		if b, _ := os.ReadFile(f); bytes.Contains(b, []byte("diskpoint-files-")) {
			left = append(left, f+": "+string(b))
		}
	}
	return left
}

// diskpoint files copies trees out of the partitions of a GPT disk, out of
// the only partition of an MBR disk and out of a disk without a partition
// table, for each of two restore points, as
// they were at each; asks which partition when there are several; and
// leaves nothing mounted or attached, whether it worked or failed.
func TestCLIFilesCopiesOutOfPartitions(t *testing.T) {
	requireFilesTools(t, "sgdisk", "mkfs.ext4")
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	mustBinary(t, nil, "init", "-repo", repo)
	// os: GPT, partition 1 (16 MiB) and 2 (12 MiB), each ext4; raw: ext4
	// on the whole disk.
	osImg, rawImg, mbrImg := filepath.Join(dir, "os.img"), filepath.Join(dir, "raw.img"), filepath.Join(dir, "mbr.img")
	if err := os.WriteFile(osImg, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Truncate(osImg, 40<<20)
	runTool(t, "sgdisk", "-n", "1:2048:+16M", "-c", "1:system", "-n", "2:0:+12M", "-c", "2:data", osImg)
	// mbr: an MBR with one Linux partition (type 0x83) of 12 MiB at 1 MiB.
	if err := os.WriteFile(mbrImg, mbrWith(0x83, 2048, 12<<11)[:512], 0o600); err != nil {
		t.Fatal(err)
	}
	os.Truncate(mbrImg, 14<<20)
	const part1, part2 = 2048 * 512, (2048 + 16<<11) * 512
	trees := map[string]string{}
	var points []string
	for gen := range 2 {
		for _, name := range []string{"p1", "p2", "raw", "mb"} {
			src := filepath.Join(dir, fmt.Sprintf("%s-%d", name, gen))
			makeTree(t, filepath.Join(src, "data"), uint64(gen*10+len(name)))
			if gen == 1 && name == "p2" { // the second partition changes little
				os.Remove(filepath.Join(src, "data", "blobs", "b03.bin"))
			}
			trees[fmt.Sprintf("%s-%d", name, gen)] = filepath.Join(src, "data")
		}
		fsImg := filepath.Join(dir, "fs.img")
		ext4Image(t, fsImg, 16<<20, filepath.Join(dir, fmt.Sprintf("p1-%d", gen)))
		writeAt(t, fsImg, osImg, part1)
		ext4Image(t, fsImg, 12<<20, filepath.Join(dir, fmt.Sprintf("p2-%d", gen)))
		writeAt(t, fsImg, osImg, part2)
		ext4Image(t, rawImg, 8<<20, filepath.Join(dir, fmt.Sprintf("raw-%d", gen)))
		ext4Image(t, fsImg, 12<<20, filepath.Join(dir, fmt.Sprintf("mb-%d", gen)))
		writeAt(t, fsImg, mbrImg, 1<<20)
		points = append(points, pointID(t, mustBinary(t, nil, "create", "-repo", repo, "-collection", "vm", "-json", "os="+osImg, "raw="+rawImg, "mbr="+mbrImg)))
	}

	files := func(point, disk string, extra ...string) (int, string, string) {
		out := filepath.Join(dir, "out", fmt.Sprintf("%s-%s-%s", point, disk, strings.Join(extra, "")))
		args := append([]string{"files", "-repo", repo, "-collection", "vm", "-point", point, "-disk", disk, "-to", out}, extra...)
		code, stdout, stderr := runBinary(t, nil, append(args, "/data")...)
		if left := leftBehind(t); len(left) > 0 {
			t.Fatalf("diskpoint %s left behind: %s", strings.Join(args, " "), strings.Join(left, "; "))
		}
		return code, stdout + stderr, filepath.Join(out, "data")
	}
	for gen, point := range points {
		for _, c := range []struct {
			disk, partition, tree string
		}{{"os", "1", "p1"}, {"os", "2", "p2"}, {"raw", "", "raw"}, {"mbr", "", "mb"}} {
			var extra []string
			if c.partition != "" {
				extra = []string{"-partition", c.partition}
			}
			code, out, got := files(point, c.disk, extra...)
			if code != 0 || !strings.Contains(out, "(ext4)") {
				t.Fatalf("files of point %d disk %s partition %q: exit %d: %s", gen, c.disk, c.partition, code, out)
			}
			compareTrees(t, trees[fmt.Sprintf("%s-%d", c.tree, gen)], got)
		}
	}

	// Two partitions and no -partition: it names them and copies nothing.
	if code, out, _ := files(points[0], "os"); code != 1 || !strings.Contains(out, "-partition N: 1 (16 MiB") || !strings.Contains(out, `"data"`) {
		t.Errorf("files of a disk with two partitions, none chosen: exit %d: %s", code, out)
	}
	// A path the file system lacks fails, and everything is undone.
	code, _, errOut := runBinary(t, nil, "files", "-repo", repo, "-collection", "vm", "-point", points[1], "-disk", "raw", "-to", filepath.Join(dir, "none"), "/no/such/file")
	if code != 1 || !strings.Contains(errOut, "/no/such/file: no such file") || len(leftBehind(t)) > 0 {
		t.Errorf("files of a missing path: exit %d, %s; left behind %v", code, errOut, leftBehind(t))
	}
	// A symbolic link out of the file system resolves inside it: the host's
	// /etc/passwd is not copied through data/escape -> /etc.
	code, _, errOut = runBinary(t, nil, "files", "-repo", repo, "-collection", "vm", "-point", points[1], "-disk", "raw", "-to", filepath.Join(dir, "escape"), "/data/escape/passwd")
	if code != 1 || !strings.Contains(errOut, "no such file") {
		t.Errorf("files through a link to /etc: exit %d, %s; want it resolved in the file system, where there is no /etc", code, errOut)
	}
	// A link asked for is copied as a link.
	code, out, errOut := runBinary(t, nil, "files", "-repo", repo, "-collection", "vm", "-point", points[1], "-disk", "raw", "-to", filepath.Join(dir, "link"), "/data/bin/fstab-link")
	if code != 0 {
		t.Fatalf("files of a link: exit %d: %s %s", code, out, errOut)
	}
	if target, err := os.Readlink(filepath.Join(dir, "link", "data", "bin", "fstab-link")); err != nil || target != "../etc/fstab" {
		t.Errorf("a link was copied as %q (%v), want the link itself", target, err)
	}
}

// Root is checked before anything else, with a message that says why.
func TestCLIFilesNeedsRoot(t *testing.T) {
	saved := geteuid
	geteuid = func() int { return 1000 }
	defer func() { geteuid = saved }()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), &env{stdout: &stdout, stderr: &stderr},
		[]string{"files", "-repo", filepath.Join(t.TempDir(), "missing"), "-collection", "vm", "-point", "latest", "-disk", "os", "-to", t.TempDir(), "/etc"})
	if code != exitFailure || !strings.Contains(stderr.String(), "needs root") {
		t.Errorf("files as a user: exit %d, %s; want 1 and a message that it needs root (before finding no repository)", code, stderr.String())
	}
}
