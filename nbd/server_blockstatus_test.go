package nbd_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/internal/systest"
	"github.com/diskpoint/diskpoint/nbd"
)

// zeroBlocks is a disk that knows its zero blocks, as a restore point's
// reader does, and tells them a few blocks at a time so that the server
// must ask again.
type zeroBlocks struct {
	*bytes.Reader
	disk []byte
	bs   int64
}

func (z zeroBlocks) isZero(block int64) bool {
	b := z.disk[block*z.bs : min((block+1)*z.bs, int64(len(z.disk)))]
	return bytes.Equal(b, make([]byte, len(b)))
}

func (z zeroBlocks) Extent(ctx context.Context, off int64) (int64, bool, error) {
	block := off / z.bs
	zero := z.isZero(block)
	end := block + 1
	for end*z.bs < int64(len(z.disk)) && end < block+3 && z.isZero(end) == zero {
		end++
	}
	return min(end*z.bs, int64(len(z.disk))) - off, zero, nil
}

// wantAllocation is what base:allocation of disk must say, block by block.
func wantAllocation(disk []byte, bs int64) []nbd.Extent {
	z := zeroBlocks{disk: disk, bs: bs}
	var out []nbd.Extent
	for off := int64(0); off < int64(len(disk)); off += bs {
		var flags uint32
		if z.isZero(off / bs) {
			flags = nbd.StateHole | nbd.StateZero
		}
		out = appendMerged(out, nbd.Extent{Offset: off, Length: min(bs, int64(len(disk))-off), Flags: flags})
	}
	return out
}

// The server lists several exports, serves each to the client with
// structured replies, and shows the holes of a disk that knows them by
// base:allocation, to this package's client and to qemu-img map.
func TestServerBlockStatusAndExports(t *testing.T) {
	const bs = 64 << 10
	disk := testDisk(6<<20 + 4096)
	for _, hole := range [][2]int{{0, 2 * bs}, {1 << 20, 1 << 20}, {4<<20 + bs, bs}, {6 << 20, 4096}} {
		clear(disk[hole[0] : hole[0]+hole[1]])
	}
	plain := testDisk(1 << 20)
	exports := map[string]*nbd.Export{
		"os":   {Name: "os", Size: int64(len(disk)), Disk: zeroBlocks{Reader: bytes.NewReader(disk), disk: disk, bs: bs}},
		"data": {Name: "data", Size: int64(len(plain)), Disk: bytes.NewReader(plain)},
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "nbd.sock")
	unix, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	srv := &nbd.Server{Exports: exports, MaxRead: 1 << 20}
	for _, l := range []net.Listener{unix, tcp} {
		wg.Go(func() { srv.Serve(sctx, l) })
	}
	defer func() { stop(); wg.Wait() }()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	names, err := nbd.List(ctx, "nbd+unix:///?socket="+sock)
	if err != nil || !slices.Equal(names, []string{"data", "os"}) {
		t.Fatalf("NBD_OPT_LIST: %q, %v", names, err)
	}
	want := wantAllocation(disk, bs)
	for _, uri := range []string{"nbd+unix:///os?socket=" + sock, fmt.Sprintf("nbd://%s/os", tcp.Addr())} {
		c, err := nbd.Dial(ctx, uri, nbd.ClientOptions{MetaContexts: []string{nbd.BaseAllocation}, MaxRequest: 256 << 10})
		if err != nil {
			t.Fatal(err)
		}
		if c.Connections() < 2 {
			t.Errorf("%s: %d connections, though the server allows several", uri, c.Connections())
		}
		got := make([]byte, len(disk))
		if err := c.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, disk) {
			t.Errorf("%s: read %v, or the bytes differ", uri, err)
		}
		extents, err := c.BlockStatus(ctx, nbd.BaseAllocation, 0, c.Size())
		if err != nil || fmt.Sprint(extents) != fmt.Sprint(want) {
			t.Errorf("%s: base:allocation %v, %v\nwant %v", uri, extents, err, want)
		}
		part, err := c.BlockStatus(ctx, nbd.BaseAllocation, bs+100, 1<<20)
		if err != nil || len(part) != 3 || part[0] != (nbd.Extent{Offset: bs + 100, Length: bs - 100, Flags: 3}) || part[2] != (nbd.Extent{Offset: 1 << 20, Length: bs + 100, Flags: 3}) {
			t.Errorf("%s: base:allocation of a part: %v, %v", uri, part, err)
		}
		c.Close()
	}
	// An export without an ExtentReader is all data.
	c, err := nbd.Dial(ctx, "nbd+unix:///data?socket="+sock, nbd.ClientOptions{MetaContexts: []string{nbd.BaseAllocation}})
	if err != nil {
		t.Fatal(err)
	}
	if extents, err := c.BlockStatus(ctx, nbd.BaseAllocation, 0, c.Size()); err != nil || len(extents) != 1 || extents[0].Flags != 0 {
		t.Errorf("base:allocation of a plain disk: %v, %v", extents, err)
	}
	c.Close()

	systest.RequireTool(t, "qemu-img", "qemu-utils")
	if got := qemuMap(t, "-f", "raw", "nbd+unix:///os?socket="+sock); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("qemu-img map of the export\n %v\nwant\n %v", got, want)
	}
}
