package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/diskpoint/diskpoint/blockdiff"
	"github.com/diskpoint/diskpoint/chain"
	"golang.org/x/sync/errgroup"
)

// Capture methods, recorded per disk in the restore point.
const (
	captureReflink     = "reflink"
	captureSnapshotter = "snapshotter"
	captureReadFrozen  = "read-frozen"
	captureRead        = "read"
)

// diskCapture is one disk on its way into a restore point.
type diskCapture struct {
	src    DiskSource
	live   *blockdiff.Disk // the disk itself, opened before anything else
	parent *pointDisk
	copy   string // a point-in-time copy to read instead (clone or snapshot)
	method string
	done   bool
	result chain.DiskManifest
}

// capture takes the disks' point-in-time state and reads it.
type capture struct {
	coll  *Collection
	w     *chain.Writer
	opts  CreateOptions
	disks []*diskCapture
	snap  blockdiff.Snapshot
}

// take runs inside the freeze window: it must be quick. It clones the disks
// (or has the caller's snapshotter capture them); disks that cannot be
// cloned are read now when readNow, that is while hooks hold them still.
func (cp *capture) take(ctx context.Context, readNow bool) error {
	if cp.opts.Snapshotter != nil {
		paths := make([]string, len(cp.disks))
		for i, d := range cp.disks {
			paths[i] = d.src.Path
		}
		snap, err := cp.opts.Snapshotter.Snapshot(ctx, paths)
		if err != nil {
			return fmt.Errorf("snapshotter: %w", err)
		}
		cp.snap = snap
		if got := len(snap.Paths()); got != len(paths) {
			return fmt.Errorf("snapshotter returned %d copies for %d disks", got, len(paths))
		}
		for i, d := range cp.disks {
			d.copy, d.method = snap.Paths()[i], captureSnapshotter
		}
		return nil
	}
	var direct []*diskCapture
	for _, d := range cp.disks {
		if d.live.BlockDevice {
			direct = append(direct, d)
			continue
		}
		clone, err := blockdiff.ReflinkClone(ctx, d.src.Path)
		if errors.Is(err, blockdiff.ErrNoReflink) {
			direct = append(direct, d)
			continue
		}
		if err != nil {
			return fmt.Errorf("disk %q: %w", d.src.Name, err)
		}
		d.copy, d.method = clone, captureReflink
	}
	if !readNow {
		for _, d := range direct {
			d.method = captureRead
		}
		return nil
	}
	for _, d := range direct {
		d.method = captureReadFrozen
	}
	return cp.scan(ctx, direct)
}

// scanRest reads every disk not read yet: from its copy, or as it is.
func (cp *capture) scanRest(ctx context.Context) error {
	var rest []*diskCapture
	for _, d := range cp.disks {
		if !d.done {
			rest = append(rest, d)
		}
	}
	return cp.scan(ctx, rest)
}

// scan reads disks in parallel, each compared with its parent.
func (cp *capture) scan(ctx context.Context, disks []*diskCapture) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, d := range disks {
		g.Go(func() error {
			disk := d.live
			if d.copy != "" {
				copyDisk, err := blockdiff.OpenDisk(gctx, d.copy)
				if err != nil {
					return fmt.Errorf("disk %q: point-in-time copy: %w", d.src.Name, err)
				}
				defer copyDisk.Close()
				disk = copyDisk
			}
			dm, err := cp.coll.captureDisk(gctx, cp.w, d.src, disk, d.parent, cp.opts)
			if err != nil {
				return fmt.Errorf("disk %q: %w", d.src.Name, err)
			}
			dm.Capture = d.method
			d.result, d.done = dm, true
			return nil
		})
	}
	return g.Wait()
}

// release removes clones and releases the snapshot.
func (cp *capture) release(ctx context.Context) error {
	var errs []error
	for _, d := range cp.disks {
		if d.method == captureReflink && d.copy != "" {
			if err := os.Remove(d.copy); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	if cp.snap != nil {
		if err := cp.snap.Release(context.WithoutCancel(ctx)); err != nil {
			errs = append(errs, fmt.Errorf("release snapshot: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (cp *capture) close() {
	for _, d := range cp.disks {
		if d.live != nil {
			d.live.Close()
		}
	}
}
