package snapshot

import (
	"fmt"

	"github.com/diskpoint/diskpoint/blockdiff"
)

// Change sources a restore point records for each disk (CapturedDisk.ChangeSource).
const (
	ChangeSourceBitmap = "bitmap" // a dirty bitmap's extents
	ChangeSourceRanges = "ranges" // the caller's changed-range list
	ChangeSourceHash   = "hash"   // every block read and compared
)

// changePlan is how a disk's changed blocks are found, and what the
// restore point records of it.
type changePlan struct {
	changedOnly    bool
	changed        []blockdiff.Range
	source, reason string
	bitmap         string // the bitmap to record: it records writes from this point on
	read           string // the bitmap whose extents were read, if one was
}

// plan decides how to find the changes of disk s against parent (nil
// without a usable one). A bitmap is trusted only if the server has it
// and parent was taken with it: a bitmap that started after parent missed
// the writes in between.
func (s *DiskSource) plan(parent *pointDisk) changePlan {
	p := changePlan{source: ChangeSourceHash}
	if s.Bitmap != "" && s.bitmapFound {
		p.bitmap = s.Bitmap
	}
	if s.NextBitmap != "" {
		p.bitmap = s.NextBitmap // started at this view's instant: it exists whether or not Bitmap does
	}
	switch {
	case s.Bitmap == "" && parent != nil && s.ChangedOnly:
		p.changedOnly, p.changed, p.source = true, s.Changed, ChangeSourceRanges
	case s.Bitmap == "":
	case !s.bitmapFound:
		p.reason = fmt.Sprintf("the NBD server has no dirty bitmap %q (deleted, or lost when the VM or daemon restarted?): every block was read and compared", s.Bitmap)
	case parent == nil:
		p.reason = fmt.Sprintf("no previous restore point of the disk to read bitmap %q against: every block was read", s.Bitmap)
	case parent.disk.Bitmap != s.Bitmap:
		recorded := "no bitmap"
		if parent.disk.Bitmap != "" {
			recorded = fmt.Sprintf("bitmap %q", parent.disk.Bitmap)
		}
		p.reason = fmt.Sprintf("the previous restore point %s recorded %s, not %q: the bitmap may have started after it, so every block was read and compared", parent.point, recorded, s.Bitmap)
	default:
		p.changedOnly, p.changed, p.source, p.read = true, s.dirty, ChangeSourceBitmap, s.Bitmap
	}
	return p
}
