package snapshot

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/diskpoint/diskpoint/chain"
)

// TransferOptions configure Transfer.
type TransferOptions struct {
	// Collection, if set, transfers that collection only; "" transfers
	// every collection of the local tier.
	Collection string
	// PruneLocal prunes the local tier after the transfer: of each
	// transferred collection, the newest KeepLocal restore points stay
	// local, and older ones are deleted from the local tier, but only
	// those the vault holds. Without it the local tier keeps everything.
	PruneLocal bool
	// KeepLocal is how many of each collection's newest restore points
	// stay in the local tier when PruneLocal; 0 keeps none.
	KeepLocal int
	// GC, if set, runs the local tier's GC with these options after the
	// prune deleted restore points, to reclaim their space. Without it
	// Transfer runs no GC and TransferResult.GCDue says one is due: GC
	// refuses to run while a create runs (or waits GCOptions.LockWait),
	// and the local tier is where the scheduled creates run, so a
	// service usually runs it on its own schedule.
	GC *GCOptions
	// LockWait: wait this long for a collection's lock (the vault's, while
	// a point is copied into it; the local tier's, while it is pruned).
	LockWait time.Duration
	// FlushEvery makes what was moved durable in the vault after this
	// many bytes, so that an interrupted transfer resumes there; 0 means
	// 64 MiB (chain.DefaultCopyFlushEvery).
	FlushEvery int64
	// Progress, if set, is called as the transfer goes: as blobs move,
	// and once as each restore point starts.
	Progress func(TransferProgress)
}

// TransferProgress says how far a transfer is.
type TransferProgress struct {
	Collection string
	Point      string // the restore point being copied
	// Index counts the restore points to copy, from 1, of Points.
	Index, Points int
	// DiskBytes is the logical size of the point's disks; Copy.Covered
	// says how much of it the copy has dealt with.
	DiskBytes int64
	Copy      chain.CopyStats
}

// TransferResult says what a transfer did.
type TransferResult struct {
	// Transferred are the restore points copied into the vault, oldest
	// first per collection.
	Transferred []TransferredPoint `json:"transferred"`
	// AlreadyInVault counts the local restore points the vault had.
	AlreadyInVault int `json:"already_in_vault"`
	// Pruned are the restore points deleted from the local tier.
	Pruned []TransferPruned `json:"pruned"`
	// KeptNotInVault are local restore points that PruneLocal would
	// have deleted had the vault held them (created while the transfer
	// ran, say): a point the vault lacks is never pruned.
	KeptNotInVault []TransferPruned `json:"kept_not_in_vault"`
	// GC is the local GC's report, when TransferOptions.GC ran one.
	GC *chain.GCReport `json:"gc,omitempty"`
	// GCDue: restore points were pruned and no GC ran; their space
	// comes back with the next GC of the local tier.
	GCDue bool `json:"gc_due"`
}

// TransferredPoint is one restore point a transfer copied.
type TransferredPoint struct {
	Collection string `json:"collection"`
	ID         string `json:"id"`
	chain.CopyStats
}

// TransferPruned is one restore point of the local tier a transfer
// pruned, or kept because the vault lacks it.
type TransferPruned struct {
	Collection string    `json:"collection"`
	ID         string    `json:"id"`
	Created    time.Time `json:"created"`
}

// Transfer copies every restore point of the local tier (of
// opts.Collection, or of every collection) that the vault lacks into the
// collection of the same name in the vault, oldest first, and then, with
// opts.PruneLocal, prunes the local tier down to the newest
// opts.KeepLocal points of each collection: Azure Backup's snapshot tier
// and vault. It is Collection.Copy a point at a time: only the chunks and
// block-map nodes the vault lacks move, each checked against its hash as
// it is read, so a damaged chunk fails the transfer (ErrCorrupt) and is
// never stored in the vault; a point becomes visible in the vault only
// once everything it needs is durable there.
//
// A transfer that was interrupted (killed, cancelled, or failed) keeps
// the points it finished and what it flushed of the one it was copying;
// run again, it copies only the rest and moves nothing it flushed again.
//
// The prune deletes a local point only when the vault holds it, checked
// after the copies; it never deletes a point the vault lacks, however
// old. A failed copy stops the transfer before any prune.
func Transfer(ctx context.Context, local, vault *Repository, opts TransferOptions) (TransferResult, error) {
	result := TransferResult{Transferred: []TransferredPoint{}, Pruned: []TransferPruned{}, KeptNotInVault: []TransferPruned{}}
	if opts.KeepLocal < 0 {
		return result, fmt.Errorf("transfer: KeepLocal is %d; it counts restore points to keep", opts.KeepLocal)
	}
	if local == vault || local.Config().ID == vault.Config().ID {
		// Every point would be "in the vault", and the prune would delete
		// the only copy.
		return result, fmt.Errorf("transfer: the local tier and the vault are the same repository (%s)", local.Config().ID)
	}
	names := []string{opts.Collection}
	if opts.Collection == "" {
		var err error
		if names, err = local.Collections(ctx); err != nil {
			return result, fmt.Errorf("transfer: %w", err)
		}
	}
	for _, name := range names {
		if err := transferCollection(ctx, local, vault, name, opts, &result); err != nil {
			return result, err
		}
	}
	if !opts.PruneLocal {
		return result, nil
	}
	for _, name := range names {
		if err := pruneTransferred(ctx, local, vault, name, opts, &result); err != nil {
			return result, err
		}
	}
	if len(result.Pruned) == 0 {
		return result, nil
	}
	if opts.GC == nil {
		result.GCDue = true
		return result, nil
	}
	report, err := local.GC(ctx, *opts.GC)
	if err != nil {
		result.GCDue = true
		return result, fmt.Errorf("transfer: the restore points are transferred and the local tier pruned, but its gc: %w", err)
	}
	result.GC = &report
	return result, nil
}

// transferCollection copies the restore points of collection name that
// the vault lacks.
func transferCollection(ctx context.Context, local, vault *Repository, name string, opts TransferOptions, result *TransferResult) error {
	from, err := local.Collection(name)
	if err != nil {
		return err
	}
	to, err := vault.Collection(name)
	if err != nil {
		return err
	}
	points, err := from.List(ctx)
	if err != nil {
		return fmt.Errorf("transfer %q: %w", name, err)
	}
	inVault, err := vaultIDs(ctx, vault, name)
	if err != nil {
		return err
	}
	var missing []*RestorePoint
	for _, rp := range points {
		if inVault[rp.ID] {
			result.AlreadyInVault++
		} else {
			missing = append(missing, rp)
		}
	}
	for i, rp := range missing {
		copyOpts := CopyOptions{LockWait: opts.LockWait, FlushEvery: opts.FlushEvery}
		if progress := opts.Progress; progress != nil {
			at := TransferProgress{Collection: name, Point: rp.ID, Index: i + 1, Points: len(missing)}
			for _, d := range rp.Disks {
				at.DiskBytes += d.Size
			}
			progress(at)
			copyOpts.Progress = func(s chain.CopyStats) { at.Copy = s; progress(at) }
		}
		_, stats, err := from.Copy(ctx, rp.ID, to, copyOpts)
		if err != nil {
			if errors.Is(err, ErrNotFound) && deletedMeanwhile(ctx, from, rp.ID) {
				continue // pruned or deleted locally since it was listed: nothing to transfer
			}
			return fmt.Errorf("transfer %s/%s: %w", name, rp.ID, err)
		}
		if stats == (chain.CopyStats{}) {
			result.AlreadyInVault++ // another transfer copied it meanwhile
			continue
		}
		result.Transferred = append(result.Transferred, TransferredPoint{Collection: name, ID: rp.ID, CopyStats: stats})
	}
	return nil
}

// vaultIDs returns the IDs of the vault's restore points of collection
// name: from their objects' names, without reading a manifest.
func vaultIDs(ctx context.Context, vault *Repository, name string) (map[string]bool, error) {
	ids, err := vault.chain.ListManifestIDs(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("transfer %q: the vault's restore points: %w", name, err)
	}
	set := make(map[string]bool, len(ids))
	for _, id := range ids {
		set[id] = true
	}
	return set, nil
}

// deletedMeanwhile reports whether restore point id is gone from c.
func deletedMeanwhile(ctx context.Context, c *Collection, id string) bool {
	_, err := c.repo.chain.LoadManifest(ctx, c.name, id)
	return errors.Is(err, ErrNotFound)
}

// pruneTransferred deletes from the local tier the restore points of
// collection name older than its newest opts.KeepLocal, those the vault
// holds. It holds the local collection's lock, as Prune does, so that no
// create or prune runs in it meanwhile.
func pruneTransferred(ctx context.Context, local, vault *Repository, name string, opts TransferOptions, result *TransferResult) error {
	c, err := local.Collection(name)
	if err != nil {
		return err
	}
	unlock, err := local.chain.LockCollection(ctx, name, "transfer prune", opts.LockWait)
	if err != nil {
		return fmt.Errorf("transfer: prune %q: %w", name, err)
	}
	defer unlock()
	points, err := c.List(ctx)
	if err != nil {
		return fmt.Errorf("transfer: prune %q: %w", name, err)
	}
	sortByCreated(points)
	older := points[:max(len(points)-opts.KeepLocal, 0)]
	for i := len(older) - 1; i >= 0; i-- { // newest first, as Prune reports
		rp := older[i]
		p := TransferPruned{Collection: name, ID: rp.ID, Created: rp.Created}
		// Asked now, after the copies, of the vault itself: never a list
		// made before them.
		_, err := vault.chain.LoadManifest(ctx, name, rp.ID)
		switch {
		case errors.Is(err, ErrNotFound):
			result.KeptNotInVault = append(result.KeptNotInVault, p)
			continue
		case err != nil:
			return fmt.Errorf("transfer: prune %s/%s: is it in the vault? %w", name, rp.ID, err)
		}
		if err := c.Delete(ctx, rp.ID); err != nil {
			return fmt.Errorf("transfer: prune: %w", err)
		}
		result.Pruned = append(result.Pruned, p)
	}
	return nil
}
