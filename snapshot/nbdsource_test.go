package snapshot_test

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/diskpoint/diskpoint/blockdiff"
	"github.com/diskpoint/diskpoint/internal/systest"
	"github.com/diskpoint/diskpoint/snapshot"
)

// requireQemuTools skips without qemu-nbd, qemu-img and qemu-io, except
// in CI, whose .ci/run installs qemu-utils.
func requireQemuTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"qemu-nbd", "qemu-img", "qemu-io"} {
		systest.RequireTool(t, tool, "qemu-utils")
	}
}

// qemuNBD serves a qcow2 image with qemu-nbd (and extra flags, -r for
// read-only) on a Unix socket until the test ends, and returns the
// export's URI.
func qemuNBD(t *testing.T, image string, extra ...string) string {
	t.Helper()
	dir := t.TempDir()
	sock, pidFile := filepath.Join(dir, "nbd.sock"), filepath.Join(dir, "pid")
	systest.StartDaemon(t, pidFile, "qemu-nbd", append(append([]string{"--pid-file", pidFile, "-t", "-e", "8", "-f", "qcow2", "-k", sock}, extra...), image)...)
	return "nbd+unix:///?socket=" + sock
}

// lastScan records the scan statistics of each disk's last progress report.
type lastScan struct {
	mu    sync.Mutex
	stats map[string]blockdiff.Stats
}

func (l *lastScan) progress(p snapshot.Progress) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stats == nil {
		l.stats = map[string]blockdiff.Stats{}
	}
	l.stats[p.Disk] = p.Scan
}

// A qcow2 disk served by qemu-nbd is captured without reading what its
// base:allocation says reads as zeroes, and restores bit-exact (compared
// with qemu-img convert's raw image of the qcow2).
func TestCreateFromNBDReadsOnlyAllocatedData(t *testing.T) {
	requireQemuTools(t)
	ctx := context.Background()
	dir := t.TempDir()
	image := filepath.Join(dir, "os.qcow2")
	const size = 16 << 20
	systest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", image, strconv.Itoa(size))
	// 64 KiB clusters: every write is whole clusters, so whole blocks of the repository's.
	systest.Run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 1M", "-c", "write -P 0x22 5M 320k", "-c", "write -z 8M 1M", "-c", "write -P 0x33 15M 64k", image)
	const dataBytes = 1<<20 + 320<<10 + 64<<10
	raw := filepath.Join(dir, "os.raw")
	systest.Run(t, "qemu-img", "convert", "-f", "qcow2", "-O", "raw", image, raw)
	want := readFile(t, raw)
	uri := qemuNBD(t, image, "-r")

	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	var seen lastScan
	var ids []string
	for i := range 2 {
		rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "os", NBD: uri}}, Progress: seen.progress})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rp.ID)
		st := seen.stats["os"]
		if st.Read != dataBytes || st.Holes != size-dataBytes {
			t.Errorf("create %d: read %d bytes, %d of holes; want the %d bytes of data read, no more", i, st.Read, st.Holes, dataBytes)
		}
		if d, _ := rp.Disk("os"); i == 1 && d.ChangedBytes != 0 {
			t.Errorf("second create: %d bytes changed, want none", d.ChangedBytes)
		}
	}
	for _, id := range ids {
		restoreAndCompare(t, vm, id, "os", want)
	}

	// Errors name the server; a disk is one kind of source only.
	gone := "nbd+unix:///?socket=" + filepath.Join(dir, "no.sock")
	if _, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "os", NBD: gone}}}); err == nil || !strings.Contains(err.Error(), "no.sock") {
		t.Errorf("create from a server that is not there: %v", err)
	}
	if _, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "os", NBD: uri, Path: raw}}}); err == nil {
		t.Error("a disk with both NBD and Path was accepted")
	}
}

// writeNBD writes through an NBD export with qemu-io, as a running VM
// would: the server's dirty bitmaps record it.
func writeNBD(t *testing.T, uri string, cmds ...string) {
	t.Helper()
	args := []string{"-f", "raw"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	systest.Run(t, "qemu-io", append(args, uri)...)
}

// rawOf is the export's bytes as qemu-img reads them.
func rawOf(t *testing.T, uri string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "raw")
	systest.Run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", uri, out)
	return readFile(t, out)
}

// A dirty bitmap is trusted against exactly the restore point taken with
// it: then only its dirty extents are read. A bitmap the server lost, or
// one the previous point was not taken with, falls back to reading and
// comparing every block, with the reason recorded; every point restores
// bit-exact.
func TestCreateFromNBDWithDirtyBitmap(t *testing.T) {
	requireQemuTools(t)
	ctx := context.Background()
	dir := t.TempDir()
	image := filepath.Join(dir, "os.qcow2")
	const size = 16 << 20
	systest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", image, strconv.Itoa(size))
	systest.Run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 2M", "-c", "write -P 0x22 6M 1M", image)
	const allocated = 3 << 20
	systest.Run(t, "qemu-img", "bitmap", "--add", image, "b0")
	uri := qemuNBD(t, image, "-B", "b0") // writable, as a VM's disk is

	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	type step struct {
		uri, bitmap        string
		write              []string // before the create, through the export
		source, reasonPart string
		read               int64 // bytes the create must read
	}
	var want [][]byte
	var ids []string
	for i, s := range []step{
		{uri: uri, bitmap: "b0", source: "hash", reasonPart: "no previous restore point", read: allocated},
		{uri: uri, bitmap: "b0", write: []string{"write -P 0x33 1M 64k", "write -P 0x44 10M 192k"}, source: "bitmap", read: 64<<10 + 192<<10},
		{uri: uri, bitmap: "b9", write: []string{"write -P 0x55 12M 64k"}, source: "hash", reasonPart: `no dirty bitmap "b9"`, read: allocated + 192<<10 + 64<<10},
		{uri: uri, bitmap: "b0", write: []string{"write -P 0x66 14M 128k"}, source: "hash", reasonPart: `recorded no bitmap, not "b0"`, read: allocated + 192<<10 + 64<<10 + 128<<10},
		{uri: uri, bitmap: "b0", write: []string{"write -z 6M 64k"}, source: "bitmap", read: 64<<10 + 192<<10 + 64<<10 + 128<<10}, // every write since b0 began, but the zeroed cluster
	} {
		if len(s.write) > 0 {
			writeNBD(t, s.uri, s.write...)
		}
		want = append(want, rawOf(t, s.uri))
		var seen lastScan
		rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "os", NBD: s.uri, Bitmap: s.bitmap}}, Progress: seen.progress})
		if err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
		ids = append(ids, rp.ID)
		d, _ := rp.Disk("os")
		if d.ChangeSource != s.source || !strings.Contains(d.ChangeReason, s.reasonPart) || (s.reasonPart == "") != (d.ChangeReason == "") {
			t.Errorf("create %d: change source %q, reason %q; want %q, a reason saying %q", i, d.ChangeSource, d.ChangeReason, s.source, s.reasonPart)
		}
		if st := seen.stats["os"]; st.Read != s.read {
			t.Errorf("create %d (%s): read %d bytes, want %d", i, d.ChangeSource, st.Read, s.read)
		}
		if wantBitmap := map[bool]string{true: s.bitmap}[s.bitmap == "b0"]; d.Bitmap != wantBitmap {
			t.Errorf("create %d: recorded bitmap %q, want %q", i, d.Bitmap, wantBitmap)
		}
	}
	for i, id := range ids {
		restoreAndCompare(t, vm, id, "os", want[i])
	}

	// A disk added to the VM: read whole, alone; the bitmap still serves the other.
	data := makeDisk(t, dir, "data.img", 1<<20, 9)
	var seen lastScan
	rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "os", NBD: uri, Bitmap: "b0"}, {Name: "data", Path: data}}, Progress: seen.progress})
	if err != nil {
		t.Fatal(err)
	}
	osDisk, _ := rp.Disk("os")
	added, _ := rp.Disk("data")
	if osDisk.ChangeSource != "bitmap" || osDisk.ChangedBytes != 0 || added.Parent != "" || added.ChangeSource != "hash" {
		t.Errorf("with a disk added: os %+v, data %+v", osDisk, added)
	}
	if st := seen.stats["data"]; st.Scanned != 1<<20 || st.Read+st.Holes != 1<<20 {
		t.Errorf("the added disk: %+v, want all of it dealt with by reading or as holes", st)
	}
	restoreAndCompare(t, vm, rp.ID, "data", readFile(t, data))
}
