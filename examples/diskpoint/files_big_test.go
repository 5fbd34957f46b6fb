package main

import (
	"crypto/rand"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var filesDiskMiB = flag.Int64("files-disk-mib", 1024, "size in MiB of the GPT disk (ext4, then a 320 MiB XFS) of TestCLIFilesExt4AndXFSOfTwoPoints")

// xfsPartitionMiB: mkfs.xfs refuses file systems under 300 MB.
const xfsPartitionMiB = 320

// attachRW attaches a read-write loop device to size bytes of file at
// offset, detached when the test ends, and returns its path.
func attachRW(t *testing.T, file string, offset, size int64) string {
	t.Helper()
	out, err := exec.Command("losetup", "-f", "--show", "-o", fmt.Sprint(offset), "--sizelimit", fmt.Sprint(size), file).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// withMounted mounts device on a new directory with options, calls fn with
// it, and unmounts it.
func withMounted(t *testing.T, device, options string, fn func(dir string)) {
	t.Helper()
	dir := t.TempDir()
	runTool(t, "mount", "-o", options, device, dir)
	defer runTool(t, "umount", dir)
	fn(dir)
}

// changeTree makes the same changes in a tree wherever it is: removes the
// first directory under data, adds a file of random bytes, and appends to
// the largest file; times are fixed so both copies agree.
func changeTree(t *testing.T, root string, added []byte) {
	t.Helper()
	data := filepath.Join(root, "data")
	entries, err := os.ReadDir(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := os.RemoveAll(filepath.Join(data, e.Name())); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	when := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	newFile := filepath.Join(data, "added-between-points.bin")
	if err := os.WriteFile(newFile, added, 0o640); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(newFile, when, when)
	var largest string
	var size int64
	filepath.Walk(data, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Size() > size {
			largest, size = p, fi.Size()
		}
		return nil
	})
	f, err := os.OpenFile(largest, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(added[:4096])
	f.Close()
	os.Chtimes(largest, when, when)
}

// The test: a GPT disk of about 1 GiB with an ext4 partition
// filled from /usr/share/doc and an XFS one from /usr/lib/python3*, two
// restore points with changes between. Mounted, each DISK.img equals the
// disk as it was; both points' partitions loop-mount read-only at once
// (the XFS ones share a UUID: nouuid) and hold the files as they were;
// and diskpoint files copies out trees identical to them.
func TestCLIFilesExt4AndXFSOfTwoPoints(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped under -short: it builds a 1 GiB disk (-files-disk-mib sets the size)")
	}
	requireFilesTools(t, "sgdisk", "mkfs.ext4", "mkfs.xfs")
	dir := t.TempDir()
	repo, img := filepath.Join(dir, "repo"), filepath.Join(dir, "os.img")
	mustBinary(t, nil, "init", "-repo", repo)
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(*filesDiskMiB << 20)
	f.Close()
	ext4MiB := *filesDiskMiB - xfsPartitionMiB - 2
	runTool(t, "sgdisk", "-n", fmt.Sprintf("1:2048:+%dM", ext4MiB), "-c", "1:root", "-n", fmt.Sprintf("2:0:+%dM", xfsPartitionMiB), "-c", "2:data", img)
	parts := []struct {
		start, size int64
		fsType      string
		from        string // what fills it
		mountOpts   string // read-only, as a second copy of the same file system
	}{
		{2048 * 512, ext4MiB << 20, "ext4", "/usr/share/doc", "ro,noload"},
		{2048*512 + ext4MiB<<20, xfsPartitionMiB << 20, "xfs", "", "ro,norecovery,nouuid"},
	}
	if pythons, _ := filepath.Glob("/usr/lib/python3*"); len(pythons) > 0 {
		parts[1].from = pythons[0]
	} else {
		parts[1].from = "/usr/share/doc"
	}
	// trees[gen][part] holds the files as they are at point gen.
	var trees [2][2]string
	for i, p := range parts {
		src := filepath.Join(dir, fmt.Sprintf("tree-0-%d", i))
		os.MkdirAll(src, 0o755)
		runTool(t, "cp", "-a", p.from, filepath.Join(src, "data"))
		trees[0][i] = src
		dev := attachRW(t, img, p.start, p.size)
		runTool(t, "mkfs."+p.fsType, "-q", dev)
		withMounted(t, dev, "rw", func(mnt string) { runTool(t, "cp", "-a", filepath.Join(src, "data"), mnt) })
	}
	var points [2]string
	var images [2]string
	added := make([]byte, 5<<20)
	rand.Read(added)
	for gen := range 2 {
		if gen == 1 {
			for i, p := range parts {
				src := filepath.Join(dir, fmt.Sprintf("tree-1-%d", i))
				runTool(t, "cp", "-a", trees[0][i], src)
				changeTree(t, src, added)
				trees[1][i] = src
				dev := attachRW(t, img, p.start, p.size)
				withMounted(t, dev, "rw", func(mnt string) { changeTree(t, mnt, added) })
			}
		}
		points[gen] = pointID(t, mustBinary(t, nil, "create", "-repo", repo, "-collection", "vm", "-json", "os="+img))
		images[gen] = filepath.Join(dir, fmt.Sprintf("os-%d.img", gen))
		runTool(t, "cp", "--sparse=always", img, images[gen])
	}

	m := startMount(t, repo)
	start := time.Now()
	for gen := range 2 {
		cmpFiles(t, filepath.Join(m.dir, "vm", points[gen], "os.img"), images[gen])
	}
	t.Logf("cmp of two %d MiB DISK.img through the mount: %v", *filesDiskMiB, time.Since(start))
	// Both points' partitions mounted at once, read-only, from the mount.
	var mounts [2][2]string
	for gen := range 2 {
		for i, p := range parts {
			disk := filepath.Join(m.dir, "vm", points[gen], "os.img")
			out, err := exec.Command("losetup", "-r", "-f", "--show", "-o", fmt.Sprint(p.start), "--sizelimit", fmt.Sprint(p.size), disk).CombinedOutput()
			if err != nil {
				t.Fatalf("losetup -r on %s: %v: %s", disk, err, out)
			}
			dev := strings.TrimSpace(string(out))
			defer exec.Command("losetup", "-d", dev).Run()
			mounts[gen][i] = t.TempDir()
			runTool(t, "mount", "-t", p.fsType, "-o", p.mountOpts, dev, mounts[gen][i])
			defer exec.Command("umount", mounts[gen][i]).Run()
		}
	}
	for gen := range 2 {
		for i := range parts {
			compareTrees(t, filepath.Join(trees[gen][i], "data"), filepath.Join(mounts[gen][i], "data"))
		}
	}
	// diskpoint files copies the same trees out.
	for gen := range 2 {
		for i, p := range parts {
			out := filepath.Join(dir, fmt.Sprintf("out-%d-%d", gen, i))
			said := mustBinary(t, nil, "files", "-repo", repo, "-collection", "vm", "-point", points[gen], "-disk", "os", "-partition", fmt.Sprint(i+1), "-to", out, "/data")
			if !strings.Contains(said, "("+p.fsType+")") {
				t.Errorf("files said %q; want it to name %s", said, p.fsType)
			}
			compareTrees(t, filepath.Join(trees[gen][i], "data"), filepath.Join(out, "data"))
		}
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("diskpoint files left behind: %s", strings.Join(left, "; "))
	}
}
