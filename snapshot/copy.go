package snapshot

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/diskpoint/diskpoint/chain"
)

// CopyOptions configure Copy.
type CopyOptions struct {
	// RateLimit, if set, limits copies into the target collection; a refused
	// copy returns a *ThrottledError.
	RateLimit *RateLimit
	// LockWait: wait this long for the target collection's lock.
	LockWait time.Duration
	// FlushEvery makes what was moved durable after this many bytes, so that
	// an interrupted copy resumes there; 0 means 64 MiB.
	FlushEvery int64
	// Progress, if set, is called as blobs move.
	Progress func(chain.CopyStats)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Copy puts restore point id (an ID, a unique prefix, or Latest) of this
// collection into collection to, which may be in another repository (the
// analogue of copying restore points across regions). Only the chunks and
// block-map nodes the target lacks move, each checked against its hash as
// it is read. An interrupted copy keeps what it flushed; running it again
// moves only the rest. The copy keeps the restore point's ID and record; it
// becomes visible in the target when everything it needs is durable there.
//
// Copy is idempotent: if the target already has the restore point, it
// moves nothing and returns the target's restore point with zero
// CopyStats.
//
// The repositories may name chunks differently (different keys, or one
// encrypted and the other not): chunk IDs are keyed, so then every chunk
// is read, named again and, unless the target has it, stored, and the
// block maps are built anew.
func (c *Collection) Copy(ctx context.Context, id string, to *Collection, opts CopyOptions) (*RestorePoint, chain.CopyStats, error) {
	var stats chain.CopyStats
	// The source side holds a reader lock: GCs in any process keep what the
	// copy reads. The whole copy runs under it.
	points, lock, err := c.lockPoints(ctx, "copy to "+to.name, id)
	if err != nil {
		return nil, stats, err
	}
	defer lock.Close()
	ctx = lock.Context()
	rp := points[0]
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	dst := to.repo.chain
	unlock, err := dst.LockCollection(ctx, to.name, "copy", opts.LockWait)
	if err != nil {
		return nil, stats, fmt.Errorf("copy to %q: %w", to.name, err)
	}
	defer unlock()
	if existing, err := dst.LoadManifest(ctx, to.name, rp.ID); err == nil {
		return pointFromManifest(existing), stats, nil // there already: nothing to do
	} else if !errors.Is(err, ErrNotFound) {
		return nil, stats, err
	}
	st, err := loadState(ctx, dst, to.name)
	if err != nil {
		return nil, stats, err
	}
	if opts.RateLimit != nil {
		wait, recent := opts.RateLimit.retryAfter(st.Copies, now())
		if wait > 0 {
			return nil, stats, &ThrottledError{Collection: to.name, What: "copies", Limit: *opts.RateLimit, RetryAfter: wait}
		}
		st.Copies = recent
	}

	w, err := dst.NewWriterWait(ctx, "copy into "+to.name, opts.LockWait)
	if err != nil {
		return nil, stats, fmt.Errorf("copy to %q: %w", to.name, err)
	}
	defer w.Close()
	copied := rp.manifest()
	copied.Collection = to.name
	var copyStats func() chain.CopyStats
	if sameChunkNames(c.repo.chain, dst) {
		copier := &chain.Copier{From: c.repo.chain, To: w, FlushEvery: opts.FlushEvery, Progress: opts.Progress}
		copyStats = copier.Stats
		if err := copier.CopyBlob(ctx, chain.DataBlob, rp.Config); err != nil {
			return nil, copier.Stats(), err
		}
		for _, d := range rp.Disks {
			if err := copier.CopyDisk(ctx, d.manifest()); err != nil {
				return nil, copier.Stats(), fmt.Errorf("copy %s disk %q to %q: %w", rp.ID, d.Name, to.name, err)
			}
		}
	} else {
		copier := &rekeyCopier{from: c.repo.chain, to: w, flushEvery: opts.FlushEvery, progress: opts.Progress}
		copyStats = func() chain.CopyStats { return copier.stats }
		if copied.Config, err = copier.config(ctx, rp.Config); err != nil {
			return nil, copier.stats, fmt.Errorf("copy %s to %q: %w", rp.ID, to.name, err)
		}
		copied.Disks = make([]chain.DiskManifest, len(rp.Disks))
		for i, d := range rp.Disks {
			if copied.Disks[i], err = copier.disk(ctx, d.manifest()); err != nil {
				return nil, copier.stats, fmt.Errorf("copy %s disk %q to %q: %w", rp.ID, d.Name, to.name, err)
			}
		}
	}
	if err := w.SaveManifest(ctx, &copied); err != nil {
		return nil, copyStats(), fmt.Errorf("copy to %q: %w", to.name, err)
	}
	if opts.RateLimit != nil {
		st.Copies = append(st.Copies, now().UTC())
		if err := st.save(ctx, dst, to.name); err != nil {
			return nil, copyStats(), fmt.Errorf("copy to %q: restore point %s is copied, but: %w", to.name, rp.ID, err)
		}
	}
	return pointFromManifest(&copied), copyStats(), nil
}
