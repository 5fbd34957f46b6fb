package nbd_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/internal/systest"
	"github.com/diskpoint/diskpoint/nbd"
)

// startNbdkit runs nbdkit with a plugin and its arguments on a Unix
// socket, or on TCP if tcp, and returns the export's URI.
func startNbdkit(t *testing.T, tcp bool, plugin ...string) string {
	t.Helper()
	systest.RequireTool(t, "nbdkit", "nbdkit")
	dir := t.TempDir()
	pid := filepath.Join(dir, "nbdkit.pid")
	args := []string{"-P", pid, "-r"}
	var uri string
	if tcp {
		// A free port: nbdkit cannot be told to pick one and say which.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
		l.Close()
		args = append(args, "-i", "127.0.0.1", "-p", port)
		uri = "nbd://127.0.0.1:" + port + "/"
	} else {
		sock := filepath.Join(dir, "nbdkit.sock")
		args = append(args, "-U", sock)
		uri = "nbd+unix:///?socket=" + sock
	}
	systest.StartDaemon(t, pid, "nbdkit", append(append([]string{"-f"}, args...), plugin...)...)
	return uri
}

// TestClientReadsNbdkit reads nbdkit, a second server implementation: the
// data plugin's bytes, known exactly, over TCP; and the sparse-random
// plugin's, compared with what qemu-img reads, over a Unix socket, with
// base:allocation extents that match qemu-img map's over NBD.
func TestClientReadsNbdkit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const size = 8 << 20
	want := make([]byte, size)
	copy(want, bytes.Repeat([]byte{0x11}, 65536))
	copy(want[1<<20:], "hello diskpoint")
	copy(want[4<<20:], bytes.Repeat([]byte{1, 2, 3, 4}, 16384))
	uri := startNbdkit(t, true, "data", `data=( 0x11 )*65536 @1048576 "hello diskpoint" @4194304 ( 1 2 3 4 )*16384`, "size="+strconv.Itoa(size))
	c, err := nbd.Dial(ctx, uri, nbd.ClientOptions{MetaContexts: []string{nbd.BaseAllocation}, MaxRequest: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Logf("nbdkit data over TCP: %d connections, contexts %q", c.Connections(), c.MetaContexts())
	got := make([]byte, size)
	if err := c.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("nbdkit data: the bytes read differ from those the plugin was given")
	}
	extents, err := c.BlockStatus(ctx, nbd.BaseAllocation, 0, size)
	if err != nil {
		t.Fatal(err)
	}
	checkExtents(t, extents, want)

	uri = startNbdkit(t, false, "sparse-random", "size=32M", "seed=42", "percent=20")
	c2, err := nbd.Dial(ctx, uri, nbd.ClientOptions{MetaContexts: []string{nbd.BaseAllocation}})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	t.Logf("nbdkit sparse-random over a Unix socket: %d connections", c2.Connections())
	raw := filepath.Join(t.TempDir(), "copy.raw")
	systest.Run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", uri, raw)
	want, err = os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	got = make([]byte, c2.Size())
	if err := c2.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("nbdkit sparse-random: the bytes read differ from qemu-img's")
	}
	extents, err = c2.BlockStatus(ctx, nbd.BaseAllocation, 0, c2.Size())
	if err != nil {
		t.Fatal(err)
	}
	checkExtents(t, extents, want)
	holes := 0
	for _, e := range extents {
		if e.Flags&nbd.StateHole != 0 {
			holes++
		}
	}
	if holes == 0 {
		t.Errorf("sparse-random reported no holes: %v", extents)
	}
	if wantMap := qemuMap(t, "-f", "raw", uri); fmt.Sprint(extents) != fmt.Sprint(wantMap) {
		t.Errorf("base:allocation\n %v\nqemu-img map\n %v", extents, wantMap)
	}
}

// checkExtents checks that extents tile disk and that those flagged
// zero read as zeroes.
func checkExtents(t *testing.T, extents []nbd.Extent, disk []byte) {
	t.Helper()
	pos := int64(0)
	for _, e := range extents {
		if e.Offset != pos || e.Length <= 0 {
			t.Fatalf("extents do not tile the disk at %d: %v", pos, e)
		}
		if e.Flags&nbd.StateZero != 0 && !bytes.Equal(disk[e.Offset:e.Offset+e.Length], make([]byte, e.Length)) {
			t.Errorf("extent %v is flagged zero but is not", e)
		}
		pos += e.Length
	}
	if pos != int64(len(disk)) {
		t.Errorf("extents end at %d, the disk at %d", pos, len(disk))
	}
}
