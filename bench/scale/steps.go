package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/diskpoint/diskpoint/blockdiff"
	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/internal/profiling"
	"github.com/diskpoint/diskpoint/internal/synthdisk"
	"github.com/diskpoint/diskpoint/snapshot"
	"github.com/dustin/go-humanize"
)

// The steps, in the order they run.
const (
	stepInit            = "init"
	stepFloor           = "floor: read and hash the disk, store nothing"
	stepFull            = "create, full"
	stepIncremental     = "create, after a 1% change"
	stepRestore         = "restore of a 1 GiB range"
	stepVerify          = "verify -structure-only"
	stepCopy            = "copy of the newest point to a new repository"
	stepPoints          = "make the restore points"
	stepOpen            = "open the repository"
	stepList            = "list the collection of many points"
	stepCreateAfterMany = "create of one block, after many points"
	stepCreateAfterOne  = "create of one block, after 1 point"
	stepDelete          = "delete half the points"
	stepGC              = "gc"
)

// Collections: the big disk's, the one of many points, and the one of one.
const (
	bigCollection  = "vm"
	manyCollection = "many"
	oneCollection  = "one"
)

// changeFraction is the share of blocks the incremental finds rewritten.
const changeFraction = 0.01

// restoreRange is how much of the disk the restore step reads.
const restoreRange = 1 << 30

// bigDisk is generation 0 of the generated disk: -chunks blocks, each
// unique.
func bigDisk(p params) synthdisk.Disk {
	d, err := synthdisk.New(p.chunks*int64(p.blockSize), p.blockSize, 1, changeFraction)
	if err != nil {
		fail(err)
	}
	return d
}

// smallDisk is the one-block disk of the collections of many points and of
// one: another seed, so none of its blocks is one of the big disk's.
func smallDisk(p params) synthdisk.Disk {
	d, err := synthdisk.New(int64(p.blockSize), p.blockSize, 2, changeFraction)
	if err != nil {
		fail(err)
	}
	return d
}

// initOptions are the options of the repository the steps build.
func initOptions(p params) (snapshot.InitOptions, error) {
	switch p.format {
	case 1:
		return snapshot.InitOptions{BlockSize: p.blockSize}, nil
	case 2:
		return snapshot.InitOptions{BlockSize: p.blockSize, Format: chain.FormatVersion2}, nil
	default:
		return snapshot.InitOptions{}, fmt.Errorf("-format %d: want 1 or 2", p.format)
	}
}

// runChild runs one step, timed from before the repository is opened to
// after it is closed, and prints a childReport.
//
// DISKPOINT_CPUPROFILE, DISKPOINT_TRACE and DISKPOINT_MEMPROFILE profile
// the step as they do a CLI command (internal/profiling): what a step
// spends its time on is profiled in the process that measures it.
func runChild(p params, step string) {
	ctx := context.Background()
	defer profiling.FromEnv(fail)()
	start := time.Now()
	detail, err := childStep(ctx, p, step)
	if err != nil {
		fail(fmt.Errorf("%s: %w", step, err))
	}
	out, _ := json.Marshal(childReport{Seconds: time.Since(start).Seconds(), Detail: detail})
	os.Stdout.Write(out)
}

func childStep(ctx context.Context, p params, step string) (string, error) {
	if step == stepInit {
		opts, err := initOptions(p)
		if err != nil {
			return "", err
		}
		repo, err := snapshot.Init(ctx, p.repo(), opts)
		if err != nil {
			return "", err
		}
		return "", repo.Close()
	}
	repo, err := snapshot.Open(ctx, p.repo())
	if err != nil {
		return "", err
	}
	defer repo.Close()
	switch step {
	case stepFloor:
		return readAndHash(ctx, p, repo)
	case stepFull:
		return create(ctx, repo, bigCollection, bigDisk(p))
	case stepIncremental:
		return create(ctx, repo, bigCollection, bigDisk(p).Change())
	case stepRestore:
		return restoreRangeOf(ctx, repo, bigDisk(p).Change())
	case stepVerify:
		report, err := repo.Verify(ctx, snapshot.VerifyOptions{StructureOnly: true})
		if err != nil {
			return "", err
		}
		if !report.OK() {
			return "", fmt.Errorf("verify found damage: %+v", report)
		}
		return "sound", nil
	case stepCopy:
		return copyNewest(ctx, p, repo)
	case stepPoints:
		return makePoints(ctx, p, repo)
	case stepOpen:
		return "", nil
	case stepList:
		many, err := repo.Collection(manyCollection)
		if err != nil {
			return "", err
		}
		points, err := many.List(ctx)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%d points", len(points)), nil
	case stepCreateAfterMany:
		return create(ctx, repo, manyCollection, smallDisk(p))
	case stepCreateAfterOne:
		return create(ctx, repo, oneCollection, smallDisk(p))
	case stepDelete:
		return deleteHalf(ctx, repo)
	case stepGC:
		report, err := repo.GC(ctx, snapshot.GCOptions{})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%d points, %d live blobs, %d removed, %d packs deleted, %d repacked; %s of packs left of %s",
			report.RestorePoints, report.LiveBlobs, report.BlobsRemoved, report.PacksDeleted, report.PacksRepacked,
			humanize.IBytes(uint64(report.BytesAfter)), humanize.IBytes(uint64(report.BytesBefore))), nil
	}
	return "", fmt.Errorf("no step %q", step)
}

// create takes a restore point of disk in collection.
func create(ctx context.Context, repo *snapshot.Repository, collection string, disk synthdisk.Disk) (string, error) {
	c, err := repo.Collection(collection)
	if err != nil {
		return "", err
	}
	rp, err := c.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Reader: disk, Size: disk.Size}}})
	if err != nil {
		return "", err
	}
	d := rp.Disks[0]
	return fmt.Sprintf("%s changed, %s new chunks, %s stored", humanize.IBytes(uint64(d.ChangedBytes)), humanize.IBytes(uint64(d.NewChunkBytes)), humanize.IBytes(uint64(d.StoredBytes))), nil
}

// restoreRangeOf reads 1 GiB (or the whole disk, if smaller) from the
// middle of the newest point's disk, as an NBD export or a file-level
// restore would, and checks it against want, the disk it was made from.
func restoreRangeOf(ctx context.Context, repo *snapshot.Repository, want synthdisk.Disk) (string, error) {
	c, err := repo.Collection(bigCollection)
	if err != nil {
		return "", err
	}
	r, err := c.OpenDisk(ctx, snapshot.Latest, "d", snapshot.ReaderOptions{})
	if err != nil {
		return "", err
	}
	defer r.Close()
	length := min(int64(restoreRange), r.Size())
	bs := int64(want.BlockSize)
	off := (r.Size() - length) / 2 / bs * bs
	const piece = 4 << 20
	got, expected := make([]byte, piece), make([]byte, piece)
	for done := int64(0); done < length; {
		n := min(piece, length-done)
		if _, err := r.ReadAtContext(ctx, got[:n], off+done); err != nil {
			return "", fmt.Errorf("read at %d: %w", off+done, err)
		}
		want.ReadAt(expected[:n], off+done)
		if !bytes.Equal(got[:n], expected[:n]) {
			return "", fmt.Errorf("the %d bytes at %d differ from the disk", n, off+done)
		}
		done += n
	}
	return fmt.Sprintf("%s at %s, bit-exact", humanize.IBytes(uint64(length)), humanize.IBytes(uint64(off))), nil
}

// copyNewest copies the big disk's newest point into a new repository.
func copyNewest(ctx context.Context, p params, repo *snapshot.Repository) (string, error) {
	opts, err := initOptions(p)
	if err != nil {
		return "", err
	}
	dst, err := snapshot.Init(ctx, p.copyRepo(), opts)
	if err != nil {
		return "", err
	}
	defer dst.Close()
	from, err := repo.Collection(bigCollection)
	if err != nil {
		return "", err
	}
	to, err := dst.Collection(bigCollection)
	if err != nil {
		return "", err
	}
	_, stats, err := from.Copy(ctx, snapshot.Latest, to, snapshot.CopyOptions{})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d blobs, %s stored", stats.Blobs, humanize.IBytes(uint64(stats.Stored))), nil
}

// deleteHalf deletes the older half of the big disk's points and every
// other point of the other collections, never a collection's newest.
func deleteHalf(ctx context.Context, repo *snapshot.Repository) (string, error) {
	deleted := 0
	for _, name := range []string{bigCollection, manyCollection, oneCollection} {
		c, err := repo.Collection(name)
		if err != nil {
			return "", err
		}
		points, err := c.List(ctx)
		if err != nil {
			return "", err
		}
		for i, rp := range points[:len(points)-1] {
			if name == bigCollection && i >= len(points)/2 || name != bigCollection && i%2 == 1 {
				continue
			}
			if err := c.Delete(ctx, rp.ID); err != nil {
				return "", err
			}
			deleted++
		}
	}
	return fmt.Sprintf("%d points deleted", deleted), nil
}

// readAndHash reads the changed disk and hashes its blocks as a create
// does, and stores nothing: the floor under an incremental create, which
// reads and hashes every block of it as well.
func readAndHash(ctx context.Context, p params, repo *snapshot.Repository) (string, error) {
	disk := bigDisk(p).Change()
	d, err := blockdiff.NewReaderDisk("d", disk, disk.Size)
	if err != nil {
		return "", err
	}
	var blocks atomic.Int64
	stats, err := blockdiff.Scan(ctx, d, blockdiff.Options{
		BlockSize: p.blockSize, SegmentBlocks: repo.Config().TreeFanout, Hash: repo.Chain().HashBlob,
		Store:   func(context.Context, blockdiff.Block) error { blocks.Add(1); return nil },
		Segment: func(context.Context, blockdiff.Segment) error { return nil },
	})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s read, %d blocks hashed", humanize.IBytes(uint64(stats.Read)), blocks.Load()), nil
}
