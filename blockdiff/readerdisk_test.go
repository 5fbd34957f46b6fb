package blockdiff_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/diskpoint/diskpoint/blockdiff"
)

// countingReader counts the bytes read through it.
type countingReader struct {
	r    io.ReaderAt
	read atomic.Int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.read.Add(int64(n))
	return n, err
}

// A disk given as an io.ReaderAt is read whole, holes and zeros included
// (it has no holes to skip), and names its blocks as the same disk read
// from its file does.
func TestReaderDiskReadsEveryBlock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	size := int64(100*bs + 17)
	makeImage(t, path, size, 3)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	src := &countingReader{r: f}
	d, err := blockdiff.NewReaderDisk("generated", src, size)
	if err != nil {
		t.Fatal(err)
	}
	if d.IsFile() {
		t.Error("a reader disk says it is a file (it cannot be cloned)")
	}
	res := scanDisk(t, d, nil, nil)
	want := expectedIDs(t, path)
	equalIDs(t, "reader disk", res.ids, want)
	zeros := 0
	for i, id := range want {
		if id.IsZero() {
			zeros++
		}
		if _, ok := res.stored[int64(i)]; ok == id.IsZero() {
			t.Errorf("block %d: stored=%v, want stored=%v", i, ok, !id.IsZero())
		}
	}
	if zeros == 0 {
		t.Fatal("the image has no zero blocks: the test proves nothing about them")
	}
	if res.stats.Read != size || res.stats.Holes != 0 || src.read.Load() != size {
		t.Errorf("stats %+v, %d bytes read through the reader; want all %d bytes read, no holes", res.stats, src.read.Load(), size)
	}
	if res.stats.Zero == 0 {
		t.Errorf("stats %+v: no zero bytes found by reading", res.stats)
	}
	if err := d.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := f.ReadAt(make([]byte, 1), 0); err != nil {
		t.Errorf("closing the reader disk closed the caller's reader: %v", err)
	}

	// The same disk as a file, against the reader disk as its parent:
	// nothing changed.
	again := scan(t, path, &sliceParent{size: size, ids: res.ids}, nil)
	if len(again.stored) != 0 || again.stats.ChangedBytes != 0 {
		t.Errorf("the file against its reader-disk scan: %d blocks stored, stats %+v; want no change", len(again.stored), again.stats)
	}
}

// failingReader fails every read past at.
type failingReader struct {
	at  int64
	err error
}

func (r failingReader) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > r.at {
		return 0, r.err
	}
	clear(p)
	return len(p), nil
}

func TestReaderDiskErrors(t *testing.T) {
	if _, err := blockdiff.NewReaderDisk("x", nil, 100); err == nil {
		t.Error("a reader disk without a reader was accepted")
	}
	if _, err := blockdiff.NewReaderDisk("x", strings.NewReader(""), 0); err == nil {
		t.Error("a reader disk of size 0 was accepted")
	}
	opts := blockdiff.Options{
		BlockSize: bs, SegmentBlocks: segBlocks,
		Store:   func(context.Context, blockdiff.Block) error { return nil },
		Segment: func(context.Context, blockdiff.Segment) error { return nil },
	}
	ctx := context.Background()

	// A reader shorter than the size it was given ends early.
	d, err := blockdiff.NewReaderDisk("short", strings.NewReader(strings.Repeat("x", 3*bs)), 10*bs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := blockdiff.Scan(ctx, d, opts); err == nil || !strings.Contains(err.Error(), "short") || !strings.Contains(err.Error(), "ended early") {
		t.Errorf("scan of a reader shorter than its size: %v, want an error naming it and saying it ended early", err)
	}

	// A read error is the scan's error, wrapped, naming the disk.
	broken := errors.New("connection reset")
	d, err = blockdiff.NewReaderDisk("nbd", failingReader{at: 20 * bs, err: broken}, 40*bs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := blockdiff.Scan(ctx, d, opts); !errors.Is(err, broken) || !strings.Contains(err.Error(), "nbd") {
		t.Errorf("scan of a failing reader: %v, want it to wrap %v and name the disk", err, broken)
	}
}

// closeCounter counts Close calls.
type closeCounter struct{ n int }

func (c *closeCounter) Close() error { c.n++; return nil }

// A reader disk that knows where its data is reads only that: the rest
// counts as holes, unread, and the blocks' IDs are those of the same disk
// read whole. The disk closes its reader when given a Closer.
func TestReaderDiskReadsOnlyItsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	size := int64(100*bs + 17)
	makeImage(t, path, size, 3)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Zero two ranges, one of them unaligned, as a server's allocation map would say.
	holes := []blockdiff.Range{{Offset: 3 * bs, Length: 20 * bs}, {Offset: 50*bs + 100, Length: 30 * bs}}
	img, _ := os.ReadFile(path)
	for _, h := range holes {
		clear(img[h.Offset:h.End()])
	}
	os.WriteFile(path, img, 0o600)
	data := []blockdiff.Range{{Offset: 0, Length: 3 * bs}, {Offset: 23 * bs, Length: 27*bs + 100}, {Offset: 80*bs + 100, Length: size - 80*bs - 100}}
	src := &countingReader{r: f}
	closer := &closeCounter{}
	d, err := blockdiff.NewReaderDiskWith("nbd", src, size, blockdiff.ReaderDiskOptions{Data: data, Closer: closer})
	if err != nil {
		t.Fatal(err)
	}
	res := scanDisk(t, d, nil, nil)
	equalIDs(t, "reader disk with data ranges", res.ids, expectedIDs(t, path))
	// Blocks wholly in a hole are not read; the two blocks the unaligned hole cuts are.
	wantHoles := int64(20*bs + 29*bs)
	if res.stats.Holes != wantHoles || src.read.Load() != size-wantHoles {
		t.Errorf("stats %+v, %d bytes read; want %d bytes of holes, the rest read", res.stats, src.read.Load(), wantHoles)
	}
	if d.Close(); closer.n != 1 {
		t.Errorf("Close closed the reader %d times, want once", closer.n)
	}
	for _, bad := range [][]blockdiff.Range{
		{{Offset: 10, Length: 10}, {Offset: 5, Length: 10}}, // out of order
		{{Offset: 0, Length: size + 1}},                     // past the end
		{{Offset: 0, Length: 0}},                            // empty
	} {
		if _, err := blockdiff.NewReaderDiskWith("nbd", src, size, blockdiff.ReaderDiskOptions{Data: bad}); err == nil {
			t.Errorf("data ranges %v were accepted", bad)
		}
	}
}
