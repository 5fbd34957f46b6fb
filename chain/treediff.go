package chain

import (
	"context"
	"fmt"
)

// BlockRange is a run of blocks: Count blocks from First.
type BlockRange struct {
	First, Count int64
}

// DiffTrees returns the blocks whose IDs differ between two block maps of
// the same block size, merged into runs, in order. When both disks have the
// same size (and so the same tree shape) it walks the two trees in
// lockstep and never reads below a node whose ID is the same in both: the
// cost follows the change, not the disk. Blocks past the end of the shorter
// disk count as differing.
func (r *Repository) DiffTrees(ctx context.Context, a, b DiskManifest) ([]BlockRange, error) {
	if a.BlockSize != b.BlockSize {
		return nil, fmt.Errorf("diff: block sizes %d and %d differ", a.BlockSize, b.BlockSize)
	}
	ta, tb := r.OpenTree(a), r.OpenTree(b)
	d := &differ{ctx: ctx, a: ta, b: tb}
	if a.Size == b.Size {
		g := ta.Geometry()
		if err := d.walk(a.Root, b.Root, g.Height(), 0); err != nil {
			return nil, err
		}
		return d.out, nil
	}
	// Shapes differ: compare leaf by leaf over the common part.
	ga, gb := ta.Geometry(), tb.Geometry()
	common := min(ga.Leaves(), gb.Leaves())
	for j := int64(0); j < common; j++ {
		ia, err := ta.LeafID(ctx, j)
		if err != nil {
			return nil, err
		}
		ib, err := tb.LeafID(ctx, j)
		if err != nil {
			return nil, err
		}
		if err := d.leaves(ia, ib, j); err != nil {
			return nil, err
		}
	}
	shorter, longer := min(ga.Blocks(), gb.Blocks()), max(ga.Blocks(), gb.Blocks())
	if longer > shorter {
		d.add(shorter, longer-shorter)
	}
	return d.out, nil
}

type differ struct {
	ctx  context.Context
	a, b *TreeReader
	out  []BlockRange
}

func (d *differ) add(first, count int64) {
	if n := len(d.out); n > 0 && d.out[n-1].First+d.out[n-1].Count == first {
		d.out[n-1].Count += count
		return
	}
	d.out = append(d.out, BlockRange{first, count})
}

// walk compares node n of level in both trees.
func (d *differ) walk(ia, ib ID, level int, n int64) error {
	if ia == ib {
		return nil
	}
	if err := d.ctx.Err(); err != nil {
		return err
	}
	if level == 0 {
		return d.leaves(ia, ib, n)
	}
	ca, err := d.children(d.a, ia, level, n)
	if err != nil {
		return err
	}
	cb, err := d.children(d.b, ib, level, n)
	if err != nil {
		return err
	}
	for i := range ca {
		if err := d.walk(ca[i], cb[i], level-1, n*int64(d.a.g.Fanout)+int64(i)); err != nil {
			return err
		}
	}
	return nil
}

// children returns the IDs in node n of level, expanding a zero subtree.
func (d *differ) children(t *TreeReader, id ID, level int, n int64) ([]ID, error) {
	if id.IsZero() {
		return make([]ID, t.g.entries(level, n)), nil
	}
	return t.node(d.ctx, id, level, n, false)
}

// leaves compares leaf j of both trees block by block.
func (d *differ) leaves(ia, ib ID, j int64) error {
	if ia == ib {
		return nil
	}
	ba, err := d.a.LeafBlocks(d.ctx, j, ia, nil)
	if err != nil {
		return err
	}
	bb, err := d.b.LeafBlocks(d.ctx, j, ib, nil)
	if err != nil {
		return err
	}
	first := j * int64(d.a.g.Fanout)
	for i := range min(len(ba), len(bb)) {
		if ba[i] != bb[i] {
			d.add(first+int64(i), 1)
		}
	}
	return nil
}
