package snapshot

import (
	"context"
	"time"

	"github.com/diskpoint/diskpoint/chain"
)

// GCOptions configure GC. The zero value removes what no restore point
// needs, repacking packs that are more than 5% unused, and fails at once
// if a create runs.
type GCOptions struct {
	// DryRun reports what would be removed and removes nothing.
	DryRun bool
	// RepackUnused: a pack whose unused bytes exceed this fraction of its
	// size has its live blobs copied to new packs and is removed. 0 means
	// 0.05; 1 never repacks (only wholly unused packs go).
	RepackUnused float64
	// LockWait: while a create runs, in this process or another, wait up to
	// this long for it to finish; 0 returns ErrLocked at once.
	LockWait time.Duration
	// IgnoreDamaged treats restore points whose manifest is damaged as
	// deleted, so the chunks only they need are swept for good. Without it
	// GC refuses to run while any manifest is damaged: such a point can be
	// saved (its manifest put back from a copy) only while its chunks are
	// still there.
	IgnoreDamaged bool
	// Progress, if set, is called as GC goes.
	Progress func(GCProgress)
	// IncompleteUploadAge: in an S3 bucket, GC aborts the multipart
	// uploads under the repository that were started longer ago than
	// this (0 means chain.LockStaleAfter, when a writer is taken for
	// dead), freeing the parts interrupted uploads left.
	IncompleteUploadAge time.Duration
}

// GCProgress reports a GC's advance through its phases.
type GCProgress struct {
	// Phase is "mark" (Done and Total count restore points), "repack"
	// (bytes of live blobs copied to new packs) or "delete" (packs).
	Phase       string
	Done, Total int64
}

// GC removes the chunks and packs that no restore point needs any more.
// While a create runs, in this process or another, it refuses (ErrLocked),
// or waits up to opts.LockWait. Restores and exports that are reading go
// on: the packs they may read are left for a later GC. An interrupted GC
// leaves the repository whole.
func (r *Repository) GC(ctx context.Context, opts GCOptions) (chain.GCReport, error) {
	return r.chain.GC(ctx, opts.chain())
}

// chain is the options as the storage layer takes them.
func (o GCOptions) chain() chain.GCOptions {
	c := chain.GCOptions{DryRun: o.DryRun, RepackUnused: o.RepackUnused, LockWait: o.LockWait, IgnoreDamaged: o.IgnoreDamaged, IncompleteUploadAge: o.IncompleteUploadAge}
	if progress := o.Progress; progress != nil {
		c.Progress = func(p chain.GCProgress) { progress(GCProgress{Phase: p.Phase, Done: p.Done, Total: p.Total}) }
	}
	return c
}
