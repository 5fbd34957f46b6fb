package snapshot

import "context"

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
// (wantData) or is a hole (!wantData). A leaf whose blocks are all zero
// is passed over without reading it.
func (r *DiskReader) seekExtent(ctx context.Context, off int64, wantData bool) (int64, bool, error) {
	if off < 0 || off >= r.g.Size {
		return 0, false, nil
	}
	bs, fanout, blocks := int64(r.g.BlockSize), int64(r.g.Fanout), r.g.Blocks()
	for b := off / bs; b < blocks; {
		leaf := b / fanout
		leafEnd := min((leaf+1)*fanout, blocks)
		leafID, err := r.tree.LeafID(ctx, leaf)
		if err != nil {
			return 0, false, err
		}
		if leafID.IsZero() {
			if !wantData {
				return max(off, b*bs), true, nil
			}
			b = leafEnd
			continue
		}
		ids, err := r.leafBlocks(ctx, leaf)
		if err != nil {
			return 0, false, err
		}
		for ; b < leafEnd; b++ {
			if ids[b-leaf*fanout].IsZero() != wantData {
				return max(off, b*bs), true, nil
			}
		}
	}
	return 0, false, nil
}
