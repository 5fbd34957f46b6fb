package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/diskpoint/diskpoint/blockdiff"
	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/consistency"
	"golang.org/x/sync/errgroup"
)

// ConsistentSnapshotter is a Snapshotter that says what its snapshots are
// worth by themselves, so that a restore point can be labelled with it.
// A plain Snapshotter is taken to copy each disk at an instant of its own:
// several disks are then consistent together only if a hook holds them
// still.
type ConsistentSnapshotter interface {
	blockdiff.Snapshotter
	// SnapshotConsistency is what every snapshot achieves: consistency.Crash
	// when it takes all the disks of one call at one instant (an atomic
	// multi-disk snapshot); consistency.FileSystem when it also quiesces
	// their file systems (a hypervisor's snapshot through a guest agent's
	// freeze). Application consistency needs application hooks, so
	// consistency.Application counts as FileSystem; anything else as
	// nothing.
	SnapshotConsistency() consistency.Mode
}

// Capture methods, recorded per disk in the restore point.
const (
	captureReflink     = "reflink"
	captureSnapshotter = "snapshotter"
	captureReadFrozen  = "read-frozen"
	captureRead        = "read"
	captureFrozenView  = "frozen-view" // an NBD view frozen at one instant (DiskSource.HeldStill)
)

// diskCapture is one disk on its way into a restore point.
type diskCapture struct {
	src    DiskSource
	live   *blockdiff.Disk // the disk itself, opened before anything else
	parent *pointDisk
	copy   string // a point-in-time copy to read instead (clone or snapshot)
	method string
	// spooled is what a read inside the freeze window found, to be stored
	// after the thaw.
	spooled *spooledDisk
	done    bool
	result  chain.DiskManifest
	// from and to bound the instant the disk was captured at: the clone or
	// snapshot call, or the whole read of a disk read as it is.
	from, to time.Time
}

// ErrReleaseFailed: a clone or snapshot the capture made could not be
// released (removed), so it still takes space on the host or the storage.
var ErrReleaseFailed = errors.New("releasing the capture's clones or snapshot failed")

// capture takes the disks' point-in-time state and reads it. It owns what
// the capture may touch (the open disks, the clones or snapshot, the
// writer) and frees them in end, once its take has returned, however long
// after Create that is.
type capture struct {
	coll  *Collection
	w     *chain.Writer
	opts  CreateOptions
	disks []*diskCapture
	snap  blockdiff.Snapshot
	spool *spool // what disks read inside the freeze window found

	mu      sync.Mutex
	started bool          // take was entered
	settled bool          // end was called: take may no longer start
	taken   chan struct{} // closed when take has returned
}

func newCapture(c *Collection, opts CreateOptions) *capture {
	return &capture{coll: c, opts: opts, taken: make(chan struct{})}
}

// taker returns the capture function for the coordinator: take, run at
// most once. The coordinator runs it in a goroutine that may only get going
// after Run has returned; if end came first, take does not start at all.
func (cp *capture) taker() func(context.Context, consistency.Hold) error {
	return func(ctx context.Context, hold consistency.Hold) error {
		cp.mu.Lock()
		if cp.started || cp.settled {
			cp.mu.Unlock()
			return errors.New("capture: create has ended")
		}
		cp.started = true
		cp.mu.Unlock()
		defer close(cp.taken)
		return cp.take(ctx, hold.Still())
	}
}

// end frees everything the capture holds, exactly once. A take that
// overran the freeze window may still be running: FICLONE cannot be
// interrupted, and a snapshotter may ignore its context. Then end does not
// wait for it (the caller has a timeout to report); a goroutine frees
// everything when take returns, clones made after the timeout included,
// passing what release returned to late before it closes the writer.
// Otherwise end frees now and returns release's error (wrapping
// ErrReleaseFailed).
func (cp *capture) end(ctx context.Context, late func(error)) error {
	ctx = context.WithoutCancel(ctx) // a cancelled create must still release
	cp.mu.Lock()
	cp.settled = true
	running := cp.started
	cp.mu.Unlock()
	if running {
		select {
		case <-cp.taken:
		default:
			go func() {
				<-cp.taken
				late(cp.release(ctx))
				cp.close()
			}()
			return nil
		}
	}
	err := cp.release(ctx)
	cp.close()
	return err
}

// take runs inside the freeze window: it must be quick. It clones the disks
// (or has the caller's snapshotter capture them); disks that cannot be
// cloned are read now when readNow, that is while hooks hold them still,
// and what changed on them is stored after the thaw (readFrozen).
func (cp *capture) take(ctx context.Context, readNow bool) error {
	if cp.opts.Snapshotter != nil {
		paths := make([]string, len(cp.disks))
		for i, d := range cp.disks {
			paths[i] = d.src.Path
		}
		from := time.Now()
		snap, err := cp.opts.Snapshotter.Snapshot(ctx, paths)
		to := time.Now()
		if err != nil {
			return fmt.Errorf("snapshotter: %w", err)
		}
		cp.snap = snap
		if got := len(snap.Paths()); got != len(paths) {
			return fmt.Errorf("snapshotter returned %d copies for %d disks", got, len(paths))
		}
		for i, d := range cp.disks {
			d.copy, d.method = snap.Paths()[i], captureSnapshotter
			d.from, d.to = from, to
		}
		return nil
	}
	var direct []*diskCapture
	for _, d := range cp.disks {
		if d.src.NBD != "" && d.src.HeldStill > 0 {
			// Taken before Create by its own transaction: read after the
			// thaw like a clone.
			d.method = captureFrozenView
			continue
		}
		if !d.live.IsFile() { // a block device, or a reader: no clone to make
			direct = append(direct, d)
			continue
		}
		from := time.Now()
		clone, err := blockdiff.ReflinkClone(ctx, d.src.Path)
		if errors.Is(err, blockdiff.ErrNoReflink) {
			direct = append(direct, d)
			continue
		}
		if err != nil {
			return fmt.Errorf("disk %q: %w", d.src.Name, err)
		}
		d.copy, d.method = clone, captureReflink
		d.from, d.to = from, time.Now()
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
	return cp.readFrozen(ctx, direct)
}

// readFrozen reads disks while hooks hold them still, which is their
// capture, in parallel. Of all a create does with a disk only this must
// happen inside the window: reading, hashing, comparing with the parent,
// and copying the changed blocks and the block IDs into the spool.
// Compressing, storing and building block maps wait for the thaw
// (storeSpooled), so that applications are held still no longer than the
// read takes.
func (cp *capture) readFrozen(ctx context.Context, disks []*diskCapture) error {
	if len(disks) == 0 {
		return nil
	}
	cp.spool = newSpool(cp.spoolDir(), cp.spoolMemory())
	g, gctx := errgroup.WithContext(ctx)
	for _, d := range disks {
		g.Go(func() error {
			d.from = time.Now()
			defer func() { d.to = time.Now() }()
			dw := cp.coll.newDiskWriter(cp.w, d.src, d.live.Size, d.parent)
			sd := newSpooledDisk(cp.spool, dw, cp.coll.repo.chain.HashBlob)
			stats, err := cp.coll.scanDisk(gctx, d.src, d.live, dw, sd, func() int64 { return 0 }, cp.opts)
			if err != nil {
				return fmt.Errorf("disk %q: %w", d.src.Name, err)
			}
			sd.stats = stats
			d.spooled = sd
			return nil
		})
	}
	return g.Wait()
}

// spoolDir is where the spool's file goes: beside the repository when it
// is a local directory, else in os.TempDir.
func (cp *capture) spoolDir() string {
	if local, ok := cp.coll.repo.chain.Store().(interface{ Root() string }); ok {
		return local.Root()
	}
	return os.TempDir()
}

func (cp *capture) spoolMemory() int64 {
	if cp.opts.SpoolMemory == 0 {
		return DefaultSpoolMemory
	}
	return cp.opts.SpoolMemory
}

// scanRest, after the thaw, stores what the disks read inside the window
// found and reads every other disk: from its copy, or as it is.
func (cp *capture) scanRest(ctx context.Context) error {
	var rest, spooled []*diskCapture
	for _, d := range cp.disks {
		switch {
		case d.done:
		case d.spooled != nil:
			spooled = append(spooled, d)
		default:
			rest = append(rest, d)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return cp.storeSpooled(gctx, spooled) })
	g.Go(func() error { return cp.scan(gctx, rest) })
	return g.Wait()
}

// storeSpooled stores what the disks read inside the freeze window found,
// in parallel: first every disk's blocks, then the block maps, since a
// block one disk's map names may have been spooled from another disk. It
// closes the spool once done.
func (cp *capture) storeSpooled(ctx context.Context, disks []*diskCapture) error {
	if len(disks) == 0 {
		return nil
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, d := range disks {
		g.Go(func() error {
			progress := func() {}
			if cp.opts.Progress != nil {
				progress = func() {
					cp.opts.Progress(Progress{Disk: d.src.Name, Scan: d.spooled.stats, Bytes: d.spooled.dw.storedBytes()})
				}
			}
			if err := d.spooled.storeBlocks(gctx, cp.opts.Workers, progress); err != nil {
				return fmt.Errorf("disk %q: %w", d.src.Name, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	g, gctx = errgroup.WithContext(ctx)
	for _, d := range disks {
		g.Go(func() error {
			sd := d.spooled
			dm, err := sd.buildMap(gctx)
			if err != nil {
				return fmt.Errorf("disk %q: %w", d.src.Name, err)
			}
			dm.Capture = d.method
			d.result, d.done, d.spooled = dm, true, nil
			if cp.opts.Progress != nil {
				cp.opts.Progress(Progress{Disk: d.src.Name, Scan: sd.stats, Bytes: dm.StoredBytes})
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return cp.spool.close()
}

// scan reads disks in parallel, each compared with its parent. Reading a
// disk that has no point-in-time copy is its capture, and is timed as such.
func (cp *capture) scan(ctx context.Context, disks []*diskCapture) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, d := range disks {
		g.Go(func() error {
			if d.copy == "" {
				d.from = time.Now()
				defer func() { d.to = time.Now() }()
			}
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

// judged is what the capture tells consistency.Judge: how many disks, which
// were read while in use, what the snapshotter vouches for, and the spread
// from the start of the first disk's capture to the end of the last's.
func (cp *capture) judged() consistency.Capture {
	c := consistency.Capture{Disks: len(cp.disks)}
	var first, last time.Time
	for _, d := range cp.disks {
		if d.method == captureRead {
			c.LiveRead = append(c.LiveRead, d.src.Name)
		}
		if first.IsZero() || d.from.Before(first) {
			first = d.from
		}
		if d.to.After(last) {
			last = d.to
		}
	}
	if !first.IsZero() && last.After(first) {
		c.Spread = last.Sub(first)
	}
	if s, ok := cp.opts.Snapshotter.(ConsistentSnapshotter); ok {
		switch s.SnapshotConsistency() {
		case consistency.Crash:
			c.Atomic = true
		case consistency.FileSystem, consistency.Application:
			c.Atomic, c.QuiescesFileSystems = true, true
		}
	}
	return c
}

// release removes clones and releases the snapshot, each once: what was
// released (or failed to be) is forgotten.
func (cp *capture) release(ctx context.Context) error {
	var errs []error
	for _, d := range cp.disks {
		if d.method == captureReflink && d.copy != "" {
			if err := os.Remove(d.copy); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("disk %q: remove clone: %w", d.src.Name, err))
			}
			d.copy = ""
		}
	}
	if cp.snap != nil {
		names := make([]string, len(cp.disks))
		for i, d := range cp.disks {
			names[i] = d.src.Name
		}
		if err := cp.snap.Release(ctx); err != nil {
			errs = append(errs, fmt.Errorf("release snapshot of disks %s: %w", strings.Join(names, ", "), err))
		}
		cp.snap = nil
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrReleaseFailed, errors.Join(errs...))
}

// close closes the disks and the writer; the writer last, since its
// repository lock protects what take stored (and tells GC when a capture
// that outlived its create is done).
func (cp *capture) close() {
	if cp.spool != nil {
		cp.spool.close()
	}
	for _, d := range cp.disks {
		if d.live != nil {
			d.live.Close()
			d.live = nil
		}
	}
	if cp.w != nil {
		cp.w.Close()
	}
}
