package blockdiff_test

import (
	"context"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/diskpoint/diskpoint/blockdiff"
	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/internal/systest"
)

const bs = 16 << 10 // the smallest block size keeps test images small
const segBlocks = 8

// sliceParent is a parent restore point held as a slice of block IDs.
type sliceParent struct {
	size int64
	ids  []chain.ID
}

func (p sliceParent) Size() int64 { return p.size }
func (p sliceParent) SegmentIDs(_ context.Context, j int64, dst []chain.ID) ([]chain.ID, error) {
	lo := int(j) * segBlocks
	return append(dst, p.ids[lo:min(lo+segBlocks, len(p.ids))]...), nil
}

type scanResult struct {
	stats  blockdiff.Stats
	ids    []chain.ID
	stored map[int64]chain.ID
	reused int
}

// scan runs a scan and reassembles the full list of block IDs, filling in
// reused segments from the parent.
func scan(t *testing.T, path string, parent *sliceParent, changed []blockdiff.Range) scanResult {
	t.Helper()
	d, err := blockdiff.OpenDisk(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	return scanDisk(t, d, parent, changed)
}

// scanDisk is scan of an open disk.
func scanDisk(t *testing.T, d *blockdiff.Disk, parent *sliceParent, changed []blockdiff.Range) scanResult {
	t.Helper()
	ctx := context.Background()
	var err error
	res := scanResult{stored: map[int64]chain.ID{}}
	var mu sync.Mutex
	opts := blockdiff.Options{
		BlockSize: bs, SegmentBlocks: segBlocks, Workers: 3,
		Store: func(_ context.Context, b blockdiff.Block) error {
			if chain.Hash(b.Data) != b.ID {
				t.Errorf("block %d: ID does not match data", b.Index)
			}
			mu.Lock()
			defer mu.Unlock()
			if _, dup := res.stored[b.Index]; dup {
				t.Errorf("block %d stored twice", b.Index)
			}
			res.stored[b.Index] = b.ID
			return nil
		},
		Segment: func(_ context.Context, s blockdiff.Segment) error {
			if want := int64(len(res.ids)) / segBlocks; s.Index != want {
				t.Fatalf("segment %d delivered when %d was due", s.Index, want)
			}
			if s.Reused {
				res.reused++
				lo := int(s.Index) * segBlocks
				res.ids = append(res.ids, parent.ids[lo:min(lo+segBlocks, len(parent.ids))]...)
				return nil
			}
			res.ids = append(res.ids, s.IDs...)
			return nil
		},
	}
	if parent != nil {
		opts.Parent = *parent
	}
	if changed != nil {
		opts.ChangedOnly, opts.Changed = true, changed
	}
	if res.stats, err = blockdiff.Scan(ctx, d, opts); err != nil {
		t.Fatal(err)
	}
	return res
}

// expectedIDs computes block IDs the slow, obvious way.
func expectedIDs(t *testing.T, path string) []chain.ID {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ids []chain.ID
	for off := 0; off < len(data); off += bs {
		b := data[off:min(off+bs, len(data))]
		if strings.Count(string(b), "\x00") == len(b) {
			ids = append(ids, chain.ZeroID)
		} else {
			ids = append(ids, chain.Hash(b))
		}
	}
	return ids
}

// makeImage writes a sparse image: holes, zeros written out, and data.
func makeImage(t *testing.T, path string, size int64, seed uint64) {
	t.Helper()
	f, err := os.OpenFile(systest.Sparse(t, path, size), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(seed, seed))
	for off := int64(0); off < size; off += 3 * bs {
		switch rng.IntN(3) {
		case 0: // leave a hole
		case 1:
			f.WriteAt(make([]byte, min(bs, size-off)), off) // explicit zeros
		case 2:
			b := make([]byte, min(2*bs+100, size-off))
			for i := range b {
				b[i] = byte(rng.IntN(256))
			}
			f.WriteAt(b, off)
		}
	}
}

func writeAt(t *testing.T, path string, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
}

func equalIDs(t *testing.T, what string, got, want []chain.ID) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d IDs, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: block %d is %s, want %s", what, i, got[i].Short(), want[i].Short())
		}
	}
}

func TestScanFull(t *testing.T) {
	for _, size := range []int64{1, bs - 1, bs, 5*bs + 17, 64 * bs, 100*bs + 1} {
		path := filepath.Join(t.TempDir(), "disk.img")
		makeImage(t, path, size, uint64(size))
		res := scan(t, path, nil, nil)
		want := expectedIDs(t, path)
		equalIDs(t, "full scan", res.ids, want)
		for i, id := range want {
			if got, ok := res.stored[int64(i)]; ok != !id.IsZero() || ok && got != id {
				t.Errorf("size %d block %d: stored=%v, want stored=%v", size, i, ok, !id.IsZero())
			}
		}
		if res.stats.Scanned != size || res.stats.Read+res.stats.Holes != size {
			t.Errorf("size %d: stats %+v do not add up", size, res.stats)
		}
	}
}

func TestScanSkipsHolesWithoutReading(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sparse.img")
	f, _ := os.Create(path)
	f.Truncate(1 << 30) // 1 GiB, all hole
	f.WriteAt([]byte("data"), 512<<20)
	f.Close()
	res := scan(t, path, nil, nil)
	if res.stats.Read > 4<<20 {
		t.Skipf("file system does not report holes (read %d bytes)", res.stats.Read)
	}
	if res.stats.Holes < 1<<30-1<<20 || len(res.stored) != 1 {
		t.Errorf("stats %+v, %d blocks stored; want almost all holes and one block", res.stats, len(res.stored))
	}
}

func TestScanAgainstParentHandsOnOnlyChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	size := int64(64*bs + 100)
	makeImage(t, path, size, 1)
	first := scan(t, path, nil, nil)
	parent := &sliceParent{size: size, ids: first.ids}

	unchanged := scan(t, path, parent, nil)
	if len(unchanged.stored) != 0 || unchanged.stats.ChangedBytes != 0 {
		t.Fatalf("unchanged disk: %d blocks stored, %d bytes changed", len(unchanged.stored), unchanged.stats.ChangedBytes)
	}

	writes := []blockdiff.Range{{3*bs + 5, 10}, {20 * bs, 2 * bs}, {size - 50, 50}}
	for _, w := range writes {
		writeAt(t, path, w.Offset, []byte(strings.Repeat("x", int(w.Length))))
	}
	changed := scan(t, path, parent, nil)
	equalIDs(t, "rescan", changed.ids, expectedIDs(t, path))
	wantBlocks := map[int64]bool{3: true, 20: true, 21: true, 64: true}
	for b := range changed.stored {
		if !wantBlocks[b] {
			t.Errorf("block %d stored but did not change", b)
		}
	}
	if len(changed.stored) != len(wantBlocks) {
		t.Errorf("stored %d blocks, want %d", len(changed.stored), len(wantBlocks))
	}

	// A changed-range list covering the writes gives the same map, reading
	// only the touched blocks.
	byRanges := scan(t, path, parent, writes)
	equalIDs(t, "changed-range scan", byRanges.ids, changed.ids)
	if byRanges.stats.Read > 4*bs || byRanges.reused == 0 {
		t.Errorf("changed-range scan read %d bytes, reused %d segments; want <= %d bytes and some reuse", byRanges.stats.Read, byRanges.reused, 4*bs)
	}
	if len(byRanges.stored) != len(changed.stored) {
		t.Errorf("changed-range scan stored %d blocks, full scan %d", len(byRanges.stored), len(changed.stored))
	}
}

func TestScanDiskThatGrewOrShrank(t *testing.T) {
	for _, tc := range []struct{ from, to int64 }{
		{10 * bs, 30*bs + 7}, {30*bs + 7, 10 * bs}, {10*bs + 3, 10*bs + 9000}, {17 * bs, 9*bs - 1},
	} {
		path := filepath.Join(t.TempDir(), "disk.img")
		makeImage(t, path, tc.from, 5)
		first := scan(t, path, nil, nil)
		parent := &sliceParent{size: tc.from, ids: first.ids}
		if err := os.Truncate(path, tc.to); err != nil {
			t.Fatal(err)
		}
		writeAt(t, path, tc.to-3, []byte("end"))
		want := expectedIDs(t, path)
		equalIDs(t, "hash scan after resize", scan(t, path, parent, nil).ids, want)
		// The changed ranges name the write; growth is found without them.
		equalIDs(t, "range scan after resize", scan(t, path, parent, []blockdiff.Range{{tc.to - 3, 3}}).ids, want)
	}
}

func TestScanRefusesRangePastEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	makeImage(t, path, 4*bs, 1)
	ctx := context.Background()
	d, _ := blockdiff.OpenDisk(ctx, path)
	defer d.Close()
	_, err := blockdiff.Scan(ctx, d, blockdiff.Options{
		BlockSize: bs, SegmentBlocks: 4, Parent: sliceParent{size: 4 * bs, ids: make([]chain.ID, 4)},
		ChangedOnly: true, Changed: []blockdiff.Range{{5 * bs, 1}},
		Store:   func(context.Context, blockdiff.Block) error { return nil },
		Segment: func(context.Context, blockdiff.Segment) error { return nil },
	})
	if err == nil || !strings.Contains(err.Error(), "past the disk's end") {
		t.Fatalf("range past the end: %v", err)
	}
}

func TestScanStopsOnStoreError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	makeImage(t, path, 64*bs, 2)
	ctx := context.Background()
	d, _ := blockdiff.OpenDisk(ctx, path)
	defer d.Close()
	boom := errors.New("store full")
	_, err := blockdiff.Scan(ctx, d, blockdiff.Options{
		BlockSize: bs, SegmentBlocks: 4,
		Store:   func(context.Context, blockdiff.Block) error { return boom },
		Segment: func(context.Context, blockdiff.Segment) error { return nil },
	})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want the store's error", err)
	}
}

func TestOpenDiskRefusesNonDisks(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.img")
	os.WriteFile(empty, nil, 0o600)
	for _, tc := range []struct {
		path, want string
	}{
		{filepath.Join(dir, "missing.img"), "no such file"},
		{dir, "is a directory"},
		{empty, "is empty"},
		{"/dev/null", "neither a regular file nor a block device"},
	} {
		_, err := blockdiff.OpenDisk(ctx, tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
			t.Errorf("OpenDisk(%s) = %v, want an error naming it and saying %q", tc.path, err, tc.want)
		}
	}
	if _, err := blockdiff.OpenDisk(ctx, filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing disk error does not wrap fs.ErrNotExist: %v", err)
	}
}

// A disk image truncated while it is scanned (mapped or read) gives an
// error that says so; nothing crashes.
func TestScanDiskTruncatedWhileRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	data := make([]byte, 256*bs)
	rng := rand.New(rand.NewPCG(7, 7))
	for i := range data {
		data[i] = byte(rng.IntN(256))
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d, err := blockdiff.OpenDisk(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var once sync.Once
	_, err = blockdiff.Scan(ctx, d, blockdiff.Options{
		BlockSize: bs, SegmentBlocks: 64, Workers: 2,
		Store: func(context.Context, blockdiff.Block) error {
			once.Do(func() {
				if err := os.Truncate(path, 0); err != nil {
					t.Error(err)
				}
			})
			return nil
		},
		Segment: func(context.Context, blockdiff.Segment) error { return nil },
	})
	if err == nil || !strings.Contains(err.Error(), "shrink") || !strings.Contains(err.Error(), path) {
		t.Fatalf("scan of a disk truncated under it: %v, want an error naming it and saying it shrank", err)
	}
}
