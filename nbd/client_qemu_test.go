package nbd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/internal/systest"
	"github.com/diskpoint/diskpoint/nbd"
)

// qemuIO writes to a qcow2 image with qemu-io: each command a "write ...".
func qemuIO(t *testing.T, image string, cmds ...string) {
	t.Helper()
	args := []string{"-f", "qcow2"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	systest.Run(t, "qemu-io", append(args, image)...)
}

// mapEntry is one range of `qemu-img map --output=json`.
type mapEntry struct {
	Start  int64 `json:"start"`
	Length int64 `json:"length"`
	Data   bool  `json:"data"`
	Zero   bool  `json:"zero"`
}

// qemuMap is the image's allocation as qemu-img sees it, as base:allocation
// extents: not data is a hole, zero reads as zeroes.
func qemuMap(t *testing.T, args ...string) []nbd.Extent {
	t.Helper()
	var entries []mapEntry
	if err := json.Unmarshal([]byte(systest.Run(t, "qemu-img", append([]string{"map", "--output=json"}, args...)...)), &entries); err != nil {
		t.Fatal(err)
	}
	var out []nbd.Extent
	for _, e := range entries {
		var flags uint32
		if !e.Data {
			flags |= nbd.StateHole
		}
		if e.Zero {
			flags |= nbd.StateZero
		}
		out = appendMerged(out, nbd.Extent{Offset: e.Start, Length: e.Length, Flags: flags})
	}
	return out
}

func appendMerged(out []nbd.Extent, e nbd.Extent) []nbd.Extent {
	if n := len(out); n > 0 && out[n-1].Flags == e.Flags && out[n-1].Offset+out[n-1].Length == e.Offset {
		out[n-1].Length += e.Length
		return out
	}
	return append(out, e)
}

// TestClientReadsQemuNBD reads a qcow2 image exported by qemu-nbd: its bytes
// match qemu-img convert's, its base:allocation extents match qemu-img
// map's holes and zeroes, and its dirty bitmap's extents are exactly the
// writes made after the bitmap was added.
func TestClientReadsQemuNBD(t *testing.T) {
	for _, tool := range []string{"qemu-nbd", "qemu-img", "qemu-io"} {
		systest.RequireTool(t, tool, "qemu-utils")
	}
	dir := t.TempDir()
	image := filepath.Join(dir, "disk.qcow2")
	const size = 16 << 20
	systest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", image, strconv.Itoa(size))
	// Before the bitmap: data, and zero clusters.
	qemuIO(t, image, "write -P 0x11 0 1M", "write -P 0x22 4M 192k", "write -z 6M 128k", "write -P 0x33 15M 1M")
	systest.Run(t, "qemu-img", "bitmap", "--add", image, "b0")
	// After it, cluster-aligned (64 KiB), so that the dirty extents are exactly these.
	dirty := [][2]int64{{512 << 10, 64 << 10}, {4<<20 + 64<<10, 256 << 10}, {10 << 20, 1 << 20}}
	var cmds []string
	for i, d := range dirty {
		cmds = append(cmds, fmt.Sprintf("write -P %#x %d %d", 0x40+i, d[0], d[1]))
	}
	qemuIO(t, image, cmds...)
	raw := filepath.Join(dir, "disk.raw")
	systest.Run(t, "qemu-img", "convert", "-f", "qcow2", "-O", "raw", image, raw)
	want, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	wantMap := qemuMap(t, "-f", "qcow2", image)

	sock := filepath.Join(dir, "nbd.sock")
	pid := filepath.Join(dir, "qemu-nbd.pid")
	systest.StartDaemon(t, pid, "qemu-nbd", "--pid-file", pid, "-t", "-e", "8", "-r", "-f", "qcow2", "-B", "b0", "-k", sock, image)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // turns a hang into a failure
	defer cancel()
	uri := "nbd+unix:///?socket=" + sock // qemu-nbd's default export name is empty
	c, err := nbd.Dial(ctx, uri, nbd.ClientOptions{MetaContexts: []string{nbd.BaseAllocation, nbd.DirtyBitmap("b0"), nbd.DirtyBitmap("nope")}, MaxRequest: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Size() != size {
		t.Fatalf("size %d, want %d", c.Size(), size)
	}
	if got := c.MetaContexts(); len(got) != 2 || got[0] != nbd.BaseAllocation || got[1] != nbd.DirtyBitmap("b0") {
		t.Errorf("meta contexts %q, want base:allocation and b0's (and not a bitmap that does not exist)", got)
	}
	t.Logf("qemu-nbd: %d connections", c.Connections())

	got := make([]byte, size)
	if err := c.ReadAt(ctx, got, 0); err != nil { // 64 requests of 256 KiB, in flight at once
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the disk read over NBD differs from qemu-img convert's")
	}
	odd := make([]byte, 100001) // unaligned, across data and a hole
	if err := c.ReadAt(ctx, odd, 1<<20-777); err != nil || !bytes.Equal(odd, want[1<<20-777:][:len(odd)]) {
		t.Errorf("unaligned read: %v", err)
	}

	alloc, err := c.BlockStatus(ctx, nbd.BaseAllocation, 0, size)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(alloc) != fmt.Sprint(wantMap) {
		t.Errorf("base:allocation\n %v\nqemu-img map\n %v", alloc, wantMap)
	}
	t.Logf("base:allocation: %v", alloc)
	for _, e := range alloc {
		if e.Flags&nbd.StateZero != 0 && !bytes.Equal(want[e.Offset:e.Offset+e.Length], make([]byte, e.Length)) {
			t.Errorf("extent %v is flagged zero but is not", e)
		}
	}

	bitmap, err := c.BlockStatus(ctx, nbd.DirtyBitmap("b0"), 0, size)
	if err != nil {
		t.Fatal(err)
	}
	var gotDirty [][2]int64
	for _, e := range bitmap {
		if e.Flags&nbd.StateDirty != 0 {
			gotDirty = append(gotDirty, [2]int64{e.Offset, e.Length})
		}
	}
	if fmt.Sprint(gotDirty) != fmt.Sprint(dirty) {
		t.Errorf("dirty extents %v, want the writes after the bitmap %v", gotDirty, dirty)
	}
	// A part of the disk: extents clipped to it.
	part, err := c.BlockStatus(ctx, nbd.DirtyBitmap("b0"), 4<<20+128<<10, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(part) != 2 || part[0] != (nbd.Extent{Offset: 4<<20 + 128<<10, Length: 192 << 10, Flags: nbd.StateDirty}) || part[1].Offset+part[1].Length != 5<<20+128<<10 {
		t.Errorf("dirty extents of a part: %v", part)
	}
	if _, err := c.BlockStatus(ctx, nbd.DirtyBitmap("nope"), 0, size); err == nil {
		t.Error("block status of a bitmap the server does not have")
	}

	// TCP too: qemu-nbd on a port of its choosing is awkward, so the
	// same socket over a second client checks several clients at once.
	c2, err := nbd.Dial(ctx, uri, nbd.ClientOptions{Connections: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	part2 := make([]byte, 1<<20)
	if err := c2.ReadAt(ctx, part2, 10<<20); err != nil || !bytes.Equal(part2, want[10<<20:11<<20]) {
		t.Errorf("second client: %v", err)
	}
	if _, err := nbd.Dial(ctx, "nbd+unix:///nope?socket="+sock, nbd.ClientOptions{}); err == nil || !strings.Contains(err.Error(), sock) {
		t.Errorf("an export qemu-nbd does not have: %v, want an error naming the server", err)
	}
}

// qemu-nbd without -e serves one client at a time, yet says it allows
// several connections: the client gives up the connections it does not
// greet within ExtraConnectionWait and reads over the one it has.
func TestClientMakesDoWithOneConnection(t *testing.T) {
	for _, tool := range []string{"qemu-nbd", "qemu-img"} {
		systest.RequireTool(t, tool, "qemu-utils")
	}
	dir := t.TempDir()
	image := filepath.Join(dir, "disk.img")
	disk := testDisk(2 << 20)
	if err := os.WriteFile(image, disk, 0o600); err != nil {
		t.Fatal(err)
	}
	sock, pid := filepath.Join(dir, "nbd.sock"), filepath.Join(dir, "pid")
	systest.StartDaemon(t, pid, "qemu-nbd", "--pid-file", pid, "-t", "-r", "-f", "raw", "-k", sock, image)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := nbd.Dial(ctx, "nbd+unix:///?socket="+sock, nbd.ClientOptions{Connections: 3, ExtraConnectionWait: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Connections() != 1 {
		t.Errorf("%d connections to a server that serves one client", c.Connections())
	}
	got := make([]byte, len(disk))
	if err := c.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, disk) {
		t.Errorf("read: %v, or the bytes differ", err)
	}
}
