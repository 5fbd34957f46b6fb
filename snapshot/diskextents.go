package snapshot

import (
	"context"
	"errors"
	"fmt"
)

// The disk's runs of zero blocks (holes: never stored, read as zeroes)
// and of stored blocks, found from the block map alone, without reading
// any data: for an NBD export's base:allocation (Extent) and a mounted
// image's SEEK_DATA and SEEK_HOLE.

// maxExtentLeaves bounds the block-map leaves one Extent call looks at.
const maxExtentLeaves = 64

// Extent says how the disk runs from off on: the length of the run of
// blocks there that are all zero blocks (never stored; they read as
// zeroes) or all stored, and which. The run ends where that changes, at the
// end of the disk, or after a bounded number of block-map leaves, so a
// caller covering a range asks again from where it ended. It reads only
// the block map, no data: what an NBD export's base:allocation needs to
// show a restore point's holes.
func (r *DiskReader) Extent(ctx context.Context, off int64) (length int64, zero bool, err error) {
	if r.closed.Load() {
		return 0, false, errors.New("extent of a closed DiskReader")
	}
	if err := r.lock.Err(); err != nil {
		return 0, false, fmt.Errorf("extent at %d: %w", off, err)
	}
	if off < 0 || off >= r.g.Size {
		return 0, false, fmt.Errorf("extent at %d: outside the disk (%d bytes)", off, r.g.Size)
	}
	block := off / int64(r.g.BlockSize)
	zero = true
	end, err := r.runEnd(ctx, block, zero, maxExtentLeaves)
	if err == nil && end == block { // not a hole: a run of stored blocks
		zero = false
		end, err = r.runEnd(ctx, block, zero, maxExtentLeaves)
	}
	if err != nil {
		return 0, false, err
	}
	return min(end*int64(r.g.BlockSize), r.g.Size) - off, zero, nil
}

// SeekData returns the first offset at or after off where the disk has
// data, as lseek's SEEK_DATA does; ok is false when only holes follow.
// Holes are the disk's zero blocks, which a restore point never stores:
// a sparse copy (cp --sparse, qemu-img) skips them without reading them.
func (r *DiskReader) SeekData(ctx context.Context, off int64) (pos int64, ok bool, err error) {
	return r.seekExtent(ctx, off, true)
}

// SeekHole returns the first offset at or after off where a hole starts,
// as lseek's SEEK_HOLE does: the disk's end when no zero block follows.
func (r *DiskReader) SeekHole(ctx context.Context, off int64) (int64, error) {
	pos, ok, err := r.seekExtent(ctx, off, false)
	if err != nil || !ok {
		return r.g.Size, err
	}
	return pos, nil
}

// seekExtent finds the first block at or after off's that holds data
// (wantData) or is a hole (!wantData): where the run at off of the other
// kind ends.
func (r *DiskReader) seekExtent(ctx context.Context, off int64, wantData bool) (int64, bool, error) {
	if off < 0 || off >= r.g.Size {
		return 0, false, nil
	}
	bs := int64(r.g.BlockSize)
	b, err := r.runEnd(ctx, off/bs, wantData, 0)
	if err != nil || b >= r.g.Blocks() {
		return 0, false, err
	}
	return max(off, b*bs), true, nil
}

// runEnd returns the first block at or after first that is not a zero
// block (zero) or not a stored one (!zero): where the run of them from
// first ends. It stops at the disk's end, or, when maxLeaves > 0, at the
// end of the maxLeaves-th block-map leaf from first's. A leaf whose blocks
// are all zero is passed over without reading it.
func (r *DiskReader) runEnd(ctx context.Context, first int64, zero bool, maxLeaves int64) (int64, error) {
	fanout, stop := int64(r.g.Fanout), r.g.Blocks()
	if maxLeaves > 0 {
		stop = min(stop, (first/fanout+maxLeaves)*fanout)
	}
	b := first
	for b < stop {
		leaf := b / fanout
		leafEnd := min((leaf+1)*fanout, stop)
		leafID, err := r.tree.LeafID(ctx, leaf)
		if err != nil {
			return 0, err
		}
		if leafID.IsZero() {
			if !zero {
				return b, nil
			}
			b = leafEnd
			continue
		}
		ids, err := r.leafBlocks(ctx, leaf)
		if err != nil {
			return 0, err
		}
		for ; b < leafEnd; b++ {
			if ids[b-leaf*fanout].IsZero() != zero {
				return b, nil
			}
		}
	}
	return b, nil
}
