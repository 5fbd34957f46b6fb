package snapshot

import (
	"time"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/consistency"
)

// RestorePoint is one point in time of a collection: its disks' block maps,
// the VM configuration stored with it, and the consistency achieved. Its
// JSON form is the stored manifest's (chain/FORMAT.md), field for field.
type RestorePoint struct {
	// ID names the restore point in its collection; IDs sort by creation
	// time (20261122-013607-3f9a2c).
	ID         string    `json:"id"`
	Collection string    `json:"collection"`
	Created    time.Time `json:"created"`
	// Consistency is the mode achieved, derived from what ran and how the
	// disks were captured, never from what was asked: consistency.Crash,
	// FileSystem, Application, or Inconsistent (the disks were not
	// captured at one instant).
	Consistency consistency.Mode `json:"consistency"`
	// RequestedConsistency is the mode asked for; FallbackReason says why
	// Consistency is weaker, when it is.
	RequestedConsistency consistency.Mode `json:"requested_consistency"`
	FallbackReason       string           `json:"fallback_reason"`
	// FreezeMillis is how long the disks were held still for capture: file
	// systems frozen, I/O paused, clones taken.
	FreezeMillis int64 `json:"freeze_ms"`
	// CaptureSpreadMillis is the time from the start of the first disk's
	// capture to the end of the last's (0 in restore points from before it
	// was recorded).
	CaptureSpreadMillis int64 `json:"capture_spread_ms"`
	// Warnings are failures that did not spoil the restore point, such as
	// a post script that failed after the disks were captured while
	// quiesced.
	Warnings []string `json:"warnings,omitempty"`
	// Config names the VM configuration stored with the point (zero if
	// none was); Collection.VMConfig reads it. ConfigSize is its length.
	Config     chain.ID `json:"config,omitzero"`
	ConfigSize int64    `json:"config_size,omitempty"`
	// Excluded names the disks left out of this restore point.
	Excluded []string `json:"excluded"`
	// Disks are the disks captured, in the order they were given.
	Disks []CapturedDisk `json:"disks"`
}

// CapturedDisk is one disk of a restore point: the disk's size, how it
// was captured, its block map, and what storing it cost.
type CapturedDisk struct {
	Name      string `json:"name"`
	Size      int64  `json:"size"`
	BlockSize int    `json:"block_size"`
	// Root is the block map's root node (chain.ZeroID for an all-zero disk).
	Root chain.ID `json:"root"`
	// Capture says how the disk was held at the restore point's instant:
	// "reflink" (a clone taken while still), "snapshotter" (the caller's),
	// "read-frozen" (read while still), or "read" (read while in use,
	// nothing holding it still: the restore point is then inconsistent).
	Capture string `json:"capture,omitempty"`
	// Parent is the restore point this disk was compared against, if any.
	Parent string `json:"parent"`
	// ChangedBytes counts the bytes of blocks that differ from Parent.
	ChangedBytes int64 `json:"changed_bytes"`
	// StoredBytes counts bytes newly added to the repository for this
	// disk: compressed chunks and block-map nodes.
	StoredBytes int64 `json:"stored_bytes"`
	// MetadataBytes is the part of StoredBytes that is block-map nodes.
	MetadataBytes int64 `json:"metadata_bytes"`
	// NewChunkBytes is the plaintext size of the chunks newly stored:
	// ChangedBytes less zero blocks and duplicates, before compression.
	NewChunkBytes int64 `json:"new_chunk_bytes"`
	// ChangeSource says how the changed blocks were found: "bitmap" (a
	// QEMU dirty bitmap's extents, DiskSource.Bitmap), "ranges" (the
	// caller's list, DiskSource.Changed), or "hash" (every block read and
	// compared). ChangeReason says why a bitmap asked for was not used.
	ChangeSource string `json:"change_source,omitempty"`
	ChangeReason string `json:"change_reason,omitempty"`
	// Bitmap is the dirty bitmap that recorded the disk's writes from
	// this restore point's instant on: the next restore point trusts it
	// against this one, and no other.
	Bitmap string `json:"bitmap,omitempty"`
	// BitmapRead is the bitmap whose dirty extents were read (change
	// source "bitmap"); it differs from Bitmap after a pull-mode backup
	// (DiskSource.NextBitmap), which reads one bitmap and starts another.
	BitmapRead string `json:"bitmap_read,omitempty"`
}

// Disk returns the restore point's disk named name.
func (rp *RestorePoint) Disk(name string) (CapturedDisk, bool) {
	for _, d := range rp.Disks {
		if d.Name == name {
			return d, true
		}
	}
	return CapturedDisk{}, false
}

// pointFromManifest is the restore point a stored manifest records. It and
// RestorePoint.manifest are the only places that translate between the
// two: a field added to one must be added to the other here.
func pointFromManifest(m *chain.Manifest) *RestorePoint {
	rp := &RestorePoint{
		ID:                   m.ID,
		Collection:           m.Collection,
		Created:              m.Created,
		Consistency:          consistency.Mode(m.Consistency),
		RequestedConsistency: consistency.Mode(m.RequestedConsistency),
		FallbackReason:       m.FallbackReason,
		FreezeMillis:         m.FreezeMillis,
		CaptureSpreadMillis:  m.CaptureSpreadMillis,
		Warnings:             m.Warnings,
		Config:               m.Config,
		ConfigSize:           m.ConfigSize,
		Excluded:             m.Excluded,
	}
	if m.Disks != nil {
		rp.Disks = make([]CapturedDisk, len(m.Disks))
		for i, d := range m.Disks {
			rp.Disks[i] = diskFromManifest(d)
		}
	}
	return rp
}

// roots are the block-map roots and config blob rp references: what a
// reader lock on it names.
func (rp *RestorePoint) roots() []chain.ID {
	roots := []chain.ID{rp.Config}
	for _, d := range rp.Disks {
		roots = append(roots, d.Root)
	}
	return roots
}

// manifest is the manifest that stores rp.
func (rp *RestorePoint) manifest() chain.Manifest {
	m := chain.Manifest{
		ID:                   rp.ID,
		Collection:           rp.Collection,
		Created:              rp.Created,
		Consistency:          string(rp.Consistency),
		RequestedConsistency: string(rp.RequestedConsistency),
		FallbackReason:       rp.FallbackReason,
		FreezeMillis:         rp.FreezeMillis,
		CaptureSpreadMillis:  rp.CaptureSpreadMillis,
		Warnings:             rp.Warnings,
		Config:               rp.Config,
		ConfigSize:           rp.ConfigSize,
		Excluded:             rp.Excluded,
	}
	if rp.Disks != nil {
		m.Disks = make([]chain.DiskManifest, len(rp.Disks))
		for i, d := range rp.Disks {
			m.Disks[i] = d.manifest()
		}
	}
	return m
}

// diskFromManifest is the disk a stored disk manifest records.
func diskFromManifest(d chain.DiskManifest) CapturedDisk {
	return CapturedDisk{
		Name: d.Name, Size: d.Size, BlockSize: d.BlockSize, Root: d.Root, Capture: d.Capture, Parent: d.Parent,
		ChangedBytes: d.ChangedBytes, StoredBytes: d.StoredBytes, MetadataBytes: d.MetadataBytes, NewChunkBytes: d.NewChunkBytes,
		ChangeSource: d.ChangeSource, ChangeReason: d.ChangeReason, Bitmap: d.Bitmap, BitmapRead: d.BitmapRead,
	}
}

// manifest is the disk manifest that stores d, as the block-map readers
// and copiers of chain take it.
func (d CapturedDisk) manifest() chain.DiskManifest {
	return chain.DiskManifest{
		Name: d.Name, Size: d.Size, BlockSize: d.BlockSize, Root: d.Root, Capture: d.Capture, Parent: d.Parent,
		ChangedBytes: d.ChangedBytes, StoredBytes: d.StoredBytes, MetadataBytes: d.MetadataBytes, NewChunkBytes: d.NewChunkBytes,
		ChangeSource: d.ChangeSource, ChangeReason: d.ChangeReason, Bitmap: d.Bitmap, BitmapRead: d.BitmapRead,
	}
}
