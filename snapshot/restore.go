package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"

	"github.com/diskpoint/diskpoint/chain"
	"golang.org/x/sync/errgroup"
)

// RestoreOptions configure RestoreDisk.
type RestoreOptions struct {
	// Workers fetch, decompress, verify and write in parallel; 0 means
	// twice GOMAXPROCS (restores wait on I/O as much as on the CPU).
	Workers int
	// Progress, if set, is called with the disk bytes done and the total.
	Progress func(done, total int64)
}

// RestoreStats says what a restore did.
type RestoreStats struct {
	Size         int64 `json:"size"`
	WrittenBytes int64 `json:"written_bytes"` // data written to the target
	ZeroBytes    int64 `json:"zero_bytes"`    // zero blocks left as holes (files) or written as zeros (devices)
}

// RestoreDisk writes disk of restore point id (or Latest) to path,
// bit-exact. A regular file is written under a temporary name beside path
// and renamed into place when complete, so a failed restore never leaves a
// half-written file at path; zero blocks become holes. A block device must
// be at least the disk's size; it is written in place, zeros included.
// Every chunk is checked against its hash: a damaged one fails the restore
// with an error wrapping ErrCorrupt that names it.
func (c *Collection) RestoreDisk(ctx context.Context, id, disk, path string, opts RestoreOptions) (RestoreStats, error) {
	rp, err := c.Get(ctx, id)
	if err != nil {
		return RestoreStats{}, err
	}
	dm, ok := rp.Disk(disk)
	if !ok {
		return RestoreStats{}, fmt.Errorf("restore point %s/%s has no disk %q: %w", c.name, rp.ID, disk, ErrNotFound)
	}
	target, err := openTarget(path, dm.Size)
	if err != nil {
		return RestoreStats{}, err
	}
	stats, err := c.restoreTo(ctx, dm, target, opts)
	if err == nil {
		err = target.commit()
	}
	if err != nil {
		target.abort()
		return stats, fmt.Errorf("restore %s/%s disk %q to %s: %w", c.name, rp.ID, disk, path, err)
	}
	return stats, nil
}

// target is where a restore writes.
type target struct {
	path        string
	file        *os.File
	blockDevice bool
	tempPath    string // for files: written here, renamed to path at commit
}

func openTarget(path string, size int64) (*target, error) {
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("restore target %s: %w", path, err)
		}
		t := &target{path: path, file: f, blockDevice: true}
		devSize, err := f.Seek(0, 2)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("restore target %s: size: %w", path, err)
		}
		if devSize < size {
			f.Close()
			return nil, fmt.Errorf("restore target %s: device of %d bytes is smaller than the disk's %d", path, devSize, size)
		}
		return t, nil
	case err == nil && !fi.Mode().IsRegular():
		return nil, fmt.Errorf("restore target %s: not a regular file or block device", path)
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("restore target %s: %w", path, err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".restoring-*")
	if err != nil {
		return nil, fmt.Errorf("restore target %s: %w", path, err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("restore target %s: %w", path, err)
	}
	return &target{path: path, file: f, tempPath: f.Name()}, nil
}

func (t *target) commit() error {
	if err := t.file.Sync(); err != nil {
		return err
	}
	if err := t.file.Close(); err != nil {
		return err
	}
	if t.tempPath == "" {
		return nil
	}
	if err := os.Rename(t.tempPath, t.path); err != nil {
		return err
	}
	t.tempPath = ""
	d, err := os.Open(filepath.Dir(t.path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (t *target) abort() {
	t.file.Close()
	if t.tempPath != "" {
		os.Remove(t.tempPath)
	}
}

// restoreTo walks the block map leaf by leaf and has workers fetch,
// verify and write each leaf's blocks, out of order.
func (c *Collection) restoreTo(ctx context.Context, dm chain.DiskManifest, t *target, opts RestoreOptions) (RestoreStats, error) {
	stats := RestoreStats{Size: dm.Size}
	tree := c.repo.chain.OpenTree(dm)
	g := tree.Geometry()
	workers := opts.Workers
	if workers <= 0 {
		workers = 2 * runtime.GOMAXPROCS(0)
	}
	type leaf struct {
		index int64
		ids   []chain.ID
	}
	leaves := make(chan leaf, workers)
	var written, zeros, done atomic.Int64
	eg, ectx := errgroup.WithContext(ctx)
	eg.Go(func() error {
		defer close(leaves)
		for j := int64(0); j < g.Leaves(); j++ {
			ids, err := tree.Leaf(ectx, j, nil)
			if err != nil {
				return err
			}
			select {
			case leaves <- leaf{j, ids}:
			case <-ectx.Done():
				return ectx.Err()
			}
		}
		return nil
	})
	var zeroBlock []byte
	if t.blockDevice {
		zeroBlock = make([]byte, dm.BlockSize)
	}
	for range workers {
		eg.Go(func() error {
			var buf []byte
			for l := range leaves {
				first := l.index * int64(g.Fanout)
				var leafBytes int64
				for i, id := range l.ids {
					block := first + int64(i)
					off := block * int64(dm.BlockSize)
					n := g.BlockLength(block)
					leafBytes += int64(n)
					if id.IsZero() {
						zeros.Add(int64(n))
						if t.blockDevice {
							if _, err := t.file.WriteAt(zeroBlock[:n], off); err != nil {
								return err
							}
						}
						continue
					}
					data, err := c.repo.chain.ReadBlob(ectx, chain.DataBlob, id, buf)
					if err != nil {
						return fmt.Errorf("block %d: %w", block, err)
					}
					buf = data
					if len(data) != n {
						return &chain.CorruptError{Object: "data blob " + id.String(), Reason: fmt.Sprintf("%d bytes where block %d has %d", len(data), block, n)}
					}
					if _, err := t.file.WriteAt(data, off); err != nil {
						return err
					}
					written.Add(int64(n))
				}
				total := done.Add(leafBytes)
				if opts.Progress != nil {
					opts.Progress(total, dm.Size)
				}
			}
			return nil
		})
	}
	err := eg.Wait()
	stats.WrittenBytes, stats.ZeroBytes = written.Load(), zeros.Load()
	return stats, err
}
