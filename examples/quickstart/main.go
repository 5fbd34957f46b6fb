// Command quickstart shows diskpoint's main job end to end, in a temporary
// directory: it makes three demo disk images, takes a full restore point of
// them, changes a little of each, takes an incremental one, restores every
// disk of both restore points and checks them bit-exact, and verifies the
// repository.
//
//	go run ./examples/quickstart
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
	"github.com/dustin/go-humanize"
)

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

type demoDisk struct {
	name string
	size int64
	mix  demodisk.Mix
}

var disks = []demoDisk{
	{"os", 96 << 20, demodisk.MixedImage},
	{"data", 128 << 20, demodisk.Mix{Holes: 20, Text: 30, Random: 30, Repeats: 20}},
	{"scratch", 32 << 20, demodisk.Mix{Holes: 70, Text: 10, Random: 10, Repeats: 10}},
}

func run(ctx context.Context, out io.Writer) error {
	work, err := os.MkdirTemp("", "diskpoint-quickstart-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	fmt.Fprintf(out, "diskpoint quickstart, working in %s\n\n", work)

	var sources []snapshot.DiskSource
	var total int64
	for i, d := range disks {
		path := filepath.Join(work, d.name+".img")
		if err := demodisk.Create(path, d.size, uint64(i+1), d.mix); err != nil {
			return err
		}
		sources = append(sources, snapshot.DiskSource{Name: d.name, Path: path})
		total += d.size
	}
	fmt.Fprintf(out, "made %d demo disks, %s in all: holes, text, random data, repeated runs\n", len(disks), size(total))

	repo, err := snapshot.Init(ctx, filepath.Join(work, "repo"), snapshot.InitOptions{})
	if err != nil {
		return err
	}
	vm, err := repo.Collection("demo-vm")
	if err != nil {
		return err
	}

	// 1. The first restore point stores everything that is not zero, once.
	full, fullHashes, err := createPoint(ctx, out, vm, sources, "full restore point")
	if err != nil {
		return err
	}
	var data, newChunks, stored int64
	for _, d := range full.Disks {
		data += d.ChangedBytes // against no parent: every non-zero block
		newChunks += d.NewChunkBytes
		stored += d.StoredBytes
	}
	fmt.Fprintf(out, "  %s of non-zero data -> %s of distinct chunks (dedup %.2fx) -> %s stored (zstd %.2fx); %.1fx smaller than the disks\n",
		size(data), size(newChunks), ratio(data, newChunks), size(stored), ratio(newChunks, stored-metadata(full)), ratio(total, stored))

	// 2. Change about 1% of every disk, as a running VM would.
	var written int64
	for i, s := range sources {
		ranges, err := demodisk.Scatter(s.Path, 0.01, uint64(100+i))
		if err != nil {
			return err
		}
		for _, r := range ranges {
			written += r.Length
		}
	}
	fmt.Fprintf(out, "\nwrote %s in scattered 4-64 KiB writes across the disks\n", size(written))

	// 3. The next restore point stores only what changed.
	incr, incrHashes, err := createPoint(ctx, out, vm, sources, "incremental restore point")
	if err != nil {
		return err
	}
	var changed int64
	stored = 0
	for _, d := range incr.Disks {
		changed += d.ChangedBytes
		stored += d.StoredBytes
	}
	fmt.Fprintf(out, "  %s of changed blocks -> %s stored, of which %s block map\n", size(changed), size(stored), size(metadata(incr)))

	// 4. Restore every disk of both restore points and compare.
	start := time.Now()
	var restored int64
	for _, point := range []struct {
		rp     *snapshot.RestorePoint
		hashes map[string][32]byte
	}{{full, fullHashes}, {incr, incrHashes}} {
		for _, s := range sources {
			target := filepath.Join(work, "restored-"+s.Name+".img")
			stats, err := vm.RestoreDisk(ctx, snapshot.RestoreOptions{Point: point.rp.ID, Disk: s.Name, Path: target, Overwrite: true}) // the second point replaces the first
			if err != nil {
				return err
			}
			got, err := demodisk.Hash(target)
			if err != nil {
				return err
			}
			if got != point.hashes[s.Name] {
				return fmt.Errorf("restore point %s disk %s: restored image differs from the original", point.rp.ID, s.Name)
			}
			restored += stats.Size
			os.Remove(target)
		}
	}
	elapsed := time.Since(start)
	fmt.Fprintf(out, "\nrestored all %d disks of both restore points (%s) in %s, %s/s: every one bit-exact\n",
		len(sources), size(restored), elapsed.Round(time.Millisecond), size(int64(float64(restored)/elapsed.Seconds())))

	// 5. Verify re-reads and re-hashes every chunk in the repository.
	report, err := repo.Verify(ctx, snapshot.VerifyOptions{})
	if err != nil {
		return err
	}
	if !report.OK() {
		return fmt.Errorf("verify found damage: %+v", report.Damage)
	}
	fmt.Fprintf(out, "verify: %d restore points, %d packs, %d chunks and block-map nodes, all intact\n", report.RestorePoints, report.Packs, report.Blobs)
	return nil
}

// createPoint takes a restore point and returns it with the BLAKE3 of each
// disk image as it was, to check the restores against.
func createPoint(ctx context.Context, out io.Writer, vm *snapshot.Collection, sources []snapshot.DiskSource, what string) (*snapshot.RestorePoint, map[string][32]byte, error) {
	hashes := map[string][32]byte{}
	for _, s := range sources {
		h, err := demodisk.Hash(s.Path)
		if err != nil {
			return nil, nil, err
		}
		hashes[s.Name] = h
	}
	start := time.Now()
	rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: sources, VMConfig: []byte(`{"vcpus":2,"memory_mib":4096}`)})
	if err != nil {
		return nil, nil, err
	}
	elapsed := time.Since(start)
	var total int64
	for _, d := range rp.Disks {
		total += d.Size
	}
	fmt.Fprintf(out, "%s %s: %d disks, %s scanned in %s (%s/s)\n", what, rp.ID, len(rp.Disks), size(total),
		elapsed.Round(time.Millisecond), size(int64(float64(total)/elapsed.Seconds())))
	return rp, hashes, nil
}

func metadata(rp *snapshot.RestorePoint) (n int64) {
	for _, d := range rp.Disks {
		n += d.MetadataBytes
	}
	return n
}

func size(n int64) string { return humanize.IBytes(uint64(n)) }

func ratio(a, b int64) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}
