package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/blockdiff"
	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

// imageSize reads DISKPOINT_BENCH_SIZE: a byte count with an optional
// KiB/MiB/GiB suffix.
func imageSize(b *testing.B) int64 {
	s := os.Getenv("DISKPOINT_BENCH_SIZE")
	if s == "" {
		return 64 << 20
	}
	mult := int64(1)
	for suffix, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if strings.HasSuffix(s, suffix) {
			s, mult = strings.TrimSuffix(s, suffix), m
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		b.Fatalf("DISKPOINT_BENCH_SIZE=%q: want a size like 64MiB", os.Getenv("DISKPOINT_BENCH_SIZE"))
	}
	return n * mult
}

var (
	imageOnce sync.Once
	imageDir  string
)

// baseImage returns the path of a generated mixed image shared by the
// benchmarks of this run; callers that change it must copy it first.
func baseImage(b *testing.B) string {
	size := imageSize(b)
	imageOnce.Do(func() {
		dir, err := os.MkdirTemp("", "diskpoint-bench-")
		if err != nil {
			b.Fatal(err)
		}
		imageDir = dir
	})
	path := filepath.Join(imageDir, fmt.Sprintf("mixed-%d.img", size))
	if _, err := os.Stat(path); err != nil {
		if err := demodisk.Create(path, size, 1, demodisk.MixedImage); err != nil {
			b.Fatal(err)
		}
	}
	return path
}

// copyImage makes a private sparse copy of the base image.
func copyImage(b *testing.B, dir string) string {
	b.Helper()
	src := baseImage(b)
	dst := filepath.Join(dir, "disk.img")
	in, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	fi, _ := in.Stat()
	out, err := os.Create(dst)
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	out.Truncate(fi.Size())
	buf := make([]byte, 1<<20)
	zero := make([]byte, 1<<20)
	for off := int64(0); off < fi.Size(); off += int64(len(buf)) {
		n, _ := in.ReadAt(buf, off)
		if string(buf[:n]) != string(zero[:n]) { // keep holes
			out.WriteAt(buf[:n], off)
		}
	}
	return dst
}

func newRepo(b *testing.B, blockSize int) (*snapshot.Repository, *snapshot.Collection, string) {
	b.Helper()
	dir := b.TempDir()
	repo, err := snapshot.Init(context.Background(), filepath.Join(dir, "repo"), snapshot.InitOptions{BlockSize: blockSize})
	if err != nil {
		b.Fatal(err)
	}
	c, _ := repo.Collection("bench")
	return repo, c, dir
}

func create(b *testing.B, c *snapshot.Collection, disk snapshot.DiskSource) *snapshot.RestorePoint {
	b.Helper()
	rp, err := c.Create(context.Background(), snapshot.CreateOptions{Disks: []snapshot.DiskSource{disk}})
	if err != nil {
		b.Fatal(err)
	}
	return rp
}

// BenchmarkScan is reading and hashing alone: the floor under every create.
func BenchmarkScan(b *testing.B) {
	path := baseImage(b)
	ctx := context.Background()
	d, err := blockdiff.OpenDisk(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	b.SetBytes(d.Size)
	b.ReportAllocs()
	for b.Loop() {
		_, err := blockdiff.Scan(ctx, d, blockdiff.Options{
			BlockSize: chain.DefaultBlockSize, SegmentBlocks: chain.DefaultTreeFanout,
			Store:   func(context.Context, blockdiff.Block) error { return nil },
			Segment: func(context.Context, blockdiff.Segment) error { return nil },
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCreateFull(b *testing.B) {
	path := baseImage(b)
	fi, _ := os.Stat(path)
	b.SetBytes(fi.Size())
	b.ReportAllocs()
	var stored int64
	for b.Loop() {
		b.StopTimer()
		_, c, _ := newRepo(b, 0)
		b.StartTimer()
		rp := create(b, c, snapshot.DiskSource{Name: "d", Path: path})
		stored = rp.Disks[0].StoredBytes
	}
	b.ReportMetric(float64(stored)/float64(fi.Size()), "stored/disk")
}

// incremental prepares a repository with a full restore point of a private
// copy of the image, then changes 1% of the copy.
func incremental(b *testing.B) (*snapshot.Repository, *snapshot.Collection, string, []blockdiff.Range, int64) {
	repo, c, dir := newRepo(b, 0)
	path := copyImage(b, dir)
	create(b, c, snapshot.DiskSource{Name: "d", Path: path})
	changes, err := demodisk.Scatter(path, 0.01, 2)
	if err != nil {
		b.Fatal(err)
	}
	var written int64
	for _, r := range changes {
		written += r.Length
	}
	return repo, c, path, changes, written
}

func benchmarkIncremental(b *testing.B, ranged bool) {
	_, c, path, changes, written := incremental(b)
	fi, _ := os.Stat(path)
	if ranged {
		b.SetBytes(written) // only the changed ranges are read
	} else {
		b.SetBytes(fi.Size()) // the whole disk is read and hashed
	}
	b.ReportAllocs()
	var rp *snapshot.RestorePoint // the first iteration's: later ones dedup against its chunks
	for b.Loop() {
		src := snapshot.DiskSource{Name: "d", Path: path}
		if ranged {
			src.ChangedOnly, src.Changed = true, changes
		}
		b.StopTimer()
		// Every iteration compares against the full restore point, not the
		// previous iteration's, so each one does the same work.
		points, _ := c.List(context.Background())
		for _, p := range points[1:] {
			c.Delete(context.Background(), p.ID)
		}
		b.StartTimer()
		if p := create(b, c, src); rp == nil {
			rp = p
		}
	}
	b.ReportMetric(float64(rp.Disks[0].StoredBytes)/float64(written), "stored/written")
	b.ReportMetric(float64(rp.Disks[0].MetadataBytes)/float64(rp.Disks[0].StoredBytes), "metadata/stored")
}

func BenchmarkCreateIncrementalHashing(b *testing.B)       { benchmarkIncremental(b, false) }
func BenchmarkCreateIncrementalChangedRanges(b *testing.B) { benchmarkIncremental(b, true) }

func BenchmarkRestore(b *testing.B) {
	path := baseImage(b)
	_, c, dir := newRepo(b, 0)
	rp := create(b, c, snapshot.DiskSource{Name: "d", Path: path})
	b.SetBytes(rp.Disks[0].Size)
	b.ReportAllocs()
	out := filepath.Join(dir, "restored.img")
	for b.Loop() {
		if _, err := c.RestoreDisk(context.Background(), snapshot.RestoreOptions{Point: rp.ID, Disk: "d", Path: out, Overwrite: true}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	path := baseImage(b)
	repo, c, _ := newRepo(b, 0)
	rp := create(b, c, snapshot.DiskSource{Name: "d", Path: path})
	b.ReportAllocs()
	var report chain.VerifyReport
	for b.Loop() {
		var err error
		if report, err = repo.Verify(context.Background(), snapshot.VerifyOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	// Verify reads what is stored, not the disk: MB/s is stored bytes.
	b.SetBytes(report.BytesRead)
	b.ReportMetric(float64(rp.Disks[0].Size)/float64(report.BytesRead), "disk/stored")
}

// BenchmarkBlockSize measures what the block size trades: for each size, a
// full restore point of the mixed image, then 1% of it rewritten in
// scattered 4-64 KiB writes and an incremental restore point. It reports the
// incremental's stored bytes per byte written, its block-map bytes, and the
// full restore point's metadata, stored fraction and speed; the time per op
// (and MB/s) is the incremental's.
func BenchmarkBlockSize(b *testing.B) {
	for _, bs := range []int{16 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dKiB", bs>>10), func(b *testing.B) {
			var growth, meta, fullMeta, fullStored, fullRate float64
			var size int64
			for b.Loop() {
				b.StopTimer()
				_, c, dir := newRepo(b, bs)
				path := copyImage(b, dir)
				start := time.Now()
				full := create(b, c, snapshot.DiskSource{Name: "d", Path: path})
				fullRate = float64(full.Disks[0].Size) / 1e6 / time.Since(start).Seconds()
				changes, _ := demodisk.Scatter(path, 0.01, 3)
				var written int64
				for _, r := range changes {
					written += r.Length
				}
				b.StartTimer()
				rp := create(b, c, snapshot.DiskSource{Name: "d", Path: path})
				d := rp.Disks[0]
				size = d.Size
				growth = float64(d.StoredBytes) / float64(written)
				meta = float64(d.MetadataBytes)
				fullMeta = float64(full.Disks[0].MetadataBytes)
				fullStored = float64(full.Disks[0].StoredBytes)
			}
			b.SetBytes(size)
			b.ReportMetric(growth, "stored/written")
			b.ReportMetric(meta/1024, "incr-meta-KiB")
			b.ReportMetric(fullMeta/1024, "full-meta-KiB")
			b.ReportMetric(fullStored/float64(size), "full-stored/disk")
			b.ReportMetric(fullRate, "full-MB/s")
		})
	}
}

// BenchmarkRestoreIncremental rolls a disk that holds the full restore point
// forward to the one after a 1% change, reading and hashing the target and
// writing only what differs.
func BenchmarkRestoreIncremental(b *testing.B) {
	_, c, path, _, _ := incremental(b)
	ctx := context.Background()
	next := create(b, c, snapshot.DiskSource{Name: "d", Path: path})
	points, _ := c.List(ctx)
	target := filepath.Join(b.TempDir(), "target.img")
	b.SetBytes(next.Disks[0].Size)
	b.ReportAllocs()
	var stats snapshot.RestoreStats
	for b.Loop() {
		b.StopTimer()
		if _, err := c.RestoreDisk(ctx, snapshot.RestoreOptions{Point: points[0].ID, Disk: "d", Path: target, Overwrite: true}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		var err error
		if stats, err = c.RestoreDisk(ctx, snapshot.RestoreOptions{Point: next.ID, Disk: "d", Path: target, Incremental: true}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(stats.BlocksWritten), "blocks-written")
}

// BenchmarkDiff lists what changed between a full restore point and the one
// after a 1% change.
// MB/s is block-map bytes read from the store (a diff reads no chunks).
func BenchmarkDiff(b *testing.B) {
	repo, c, path, _, _ := incremental(b)
	ctx := context.Background()
	next := create(b, c, snapshot.DiskSource{Name: "d", Path: path})
	points, _ := c.List(ctx)
	counted, read := countPackReads(b, repo, c.Name())
	if _, err := counted.Diff(ctx, snapshot.DiffOptions{Disk: "d", From: points[0].ID, To: next.ID}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(read.Load())
	b.ReportAllocs()
	var ranges int
	for b.Loop() {
		r, err := c.Diff(ctx, snapshot.DiffOptions{Disk: "d", From: points[0].ID, To: next.ID})
		if err != nil {
			b.Fatal(err)
		}
		ranges = len(r)
	}
	b.ReportMetric(float64(ranges), "ranges")
}

// packReadCounter is a Store that counts the bytes read from packs.
type packReadCounter struct {
	chain.Store
	read *atomic.Int64
}

func (s packReadCounter) Get(ctx context.Context, name string) ([]byte, error) {
	data, err := s.Store.Get(ctx, name)
	if strings.HasPrefix(name, "packs/") {
		s.read.Add(int64(len(data)))
	}
	return data, err
}

func (s packReadCounter) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if strings.HasPrefix(name, "packs/") {
		s.read.Add(int64(len(p)))
	}
	return s.Store.ReadAt(ctx, name, p, off)
}

// countPackReads opens repo again through a store that counts the pack
// bytes read, and returns its collection and the counter.
func countPackReads(b *testing.B, repo *snapshot.Repository, collection string) (*snapshot.Collection, *atomic.Int64) {
	b.Helper()
	read := new(atomic.Int64)
	counting, err := snapshot.OpenStore(context.Background(), packReadCounter{Store: repo.Chain().Store(), read: read}, nil)
	if err != nil {
		b.Fatal(err)
	}
	counted, err := counting.Collection(collection)
	if err != nil {
		b.Fatal(err)
	}
	return counted, read
}
