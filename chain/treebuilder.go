package chain

import (
	"context"
	"fmt"
)

// TreeBuilder writes a disk's block map as its leaves arrive, in order,
// keeping only one partly filled node per level in memory: a disk of any
// size is mapped in constant memory. Nodes that are all zeros are not stored
// (their ID is ZeroID), and nodes equal to ones already stored cost nothing.
type TreeBuilder struct {
	w        *Writer
	g        Geometry
	height   int
	pending  [][]ID // pending[k]: IDs of finished level-k nodes not yet in a parent
	leaves   int64
	stored   int64
	encoding []byte
}

// NewTreeBuilder starts a block map of geometry g, written through w.
func NewTreeBuilder(w *Writer, g Geometry) *TreeBuilder {
	h := g.Height()
	return &TreeBuilder{w: w, g: g, height: h, pending: make([][]ID, h+1)}
}

// AddLeaf adds the next leaf given its block IDs.
func (b *TreeBuilder) AddLeaf(ctx context.Context, blockIDs []ID) error {
	if want := b.g.LeafBlocks(b.leaves); len(blockIDs) != want {
		return fmt.Errorf("block map leaf %d: %d block IDs, want %d", b.leaves, len(blockIDs), want)
	}
	id, err := b.node(ctx, 0, blockIDs)
	if err != nil {
		return err
	}
	return b.AddLeafID(ctx, id)
}

// AddLeafID adds the next leaf by the ID of a leaf node already stored,
// typically the same leaf of the parent restore point when nothing in it
// changed.
func (b *TreeBuilder) AddLeafID(ctx context.Context, id ID) error {
	if b.leaves >= b.g.Leaves() {
		return fmt.Errorf("block map: leaf %d is past the last (%d)", b.leaves, b.g.Leaves()-1)
	}
	b.leaves++
	b.pending[0] = append(b.pending[0], id)
	for level := 0; level < b.height && len(b.pending[level]) == b.g.Fanout; level++ {
		if err := b.close(ctx, level); err != nil {
			return err
		}
	}
	return nil
}

// close makes pending[level] a node of level+1.
func (b *TreeBuilder) close(ctx context.Context, level int) error {
	id, err := b.node(ctx, level+1, b.pending[level])
	if err != nil {
		return err
	}
	b.pending[level] = b.pending[level][:0]
	b.pending[level+1] = append(b.pending[level+1], id)
	return nil
}

func (b *TreeBuilder) node(ctx context.Context, level int, ids []ID) (ID, error) {
	if allZero(ids) {
		return ZeroID, nil
	}
	b.encoding = encodeTreeNode(b.encoding[:0], level, ids)
	id := b.w.repo.HashBlob(b.encoding)
	n, err := b.w.PutBlob(ctx, TreeBlob, id, b.encoding)
	if err != nil {
		return ZeroID, fmt.Errorf("block map node: %w", err)
	}
	b.stored += int64(n)
	return id, nil
}

// Finish closes the remaining nodes and returns the root's ID.
func (b *TreeBuilder) Finish(ctx context.Context) (ID, error) {
	if b.leaves != b.g.Leaves() {
		return ZeroID, fmt.Errorf("block map: %d of %d leaves added", b.leaves, b.g.Leaves())
	}
	for level := 0; level < b.height; level++ {
		if len(b.pending[level]) > 0 {
			if err := b.close(ctx, level); err != nil {
				return ZeroID, err
			}
		}
	}
	return b.pending[b.height][0], nil
}

// StoredBytes is what the nodes written so far added to packs.
func (b *TreeBuilder) StoredBytes() int64 { return b.stored }
