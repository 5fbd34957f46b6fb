package chain

import (
	"context"
	"fmt"
	"sync"
)

// TreeReader reads a disk restore point's block map. It caches inner nodes
// (a few per GiB of disk), so looking up leaves one after another reads each
// inner node once. It is safe for concurrent use.
type TreeReader struct {
	repo *Repository
	g    Geometry
	root ID

	mu    sync.Mutex
	inner map[ID][]ID
}

// maxCachedInner bounds the cache; past it the cache starts over.
const maxCachedInner = 4096

// OpenTree returns a reader for the block map rooted at root.
func (r *Repository) OpenTree(d DiskManifest) *TreeReader {
	return &TreeReader{repo: r, g: d.Geometry(r.config.TreeFanout), root: d.Root, inner: map[ID][]ID{}}
}

// Geometry returns the block map's geometry.
func (t *TreeReader) Geometry() Geometry { return t.g }

// LeafID returns the ID of leaf j's node (ZeroID when its blocks are all zero).
func (t *TreeReader) LeafID(ctx context.Context, j int64) (ID, error) {
	if j < 0 || j >= t.g.Leaves() {
		return ZeroID, fmt.Errorf("block map leaf %d out of range [0, %d)", j, t.g.Leaves())
	}
	id := t.root
	for level := t.g.Height(); level > 0 && !id.IsZero(); level-- {
		n := j / t.g.leavesUnder(level) // this node's number at its level
		ids, err := t.node(ctx, id, level, n, true)
		if err != nil {
			return ZeroID, err
		}
		id = ids[(j/t.g.leavesUnder(level-1))%int64(t.g.Fanout)]
	}
	return id, nil
}

// Leaf appends the block IDs of leaf j to dst and returns it.
func (t *TreeReader) Leaf(ctx context.Context, j int64, dst []ID) ([]ID, error) {
	id, err := t.LeafID(ctx, j)
	if err != nil {
		return nil, err
	}
	return t.LeafBlocks(ctx, j, id, dst)
}

// LeafBlocks appends the block IDs of leaf j, whose node is id, to dst.
func (t *TreeReader) LeafBlocks(ctx context.Context, j int64, id ID, dst []ID) ([]ID, error) {
	if id.IsZero() {
		for range t.g.LeafBlocks(j) {
			dst = append(dst, ZeroID)
		}
		return dst, nil
	}
	ids, err := t.node(ctx, id, 0, j, false)
	if err != nil {
		return nil, err
	}
	return append(dst, ids...), nil
}

// node reads node n of level, checking that it is what its place says.
func (t *TreeReader) node(ctx context.Context, id ID, level int, n int64, cache bool) ([]ID, error) {
	if cache {
		t.mu.Lock()
		ids, ok := t.inner[id]
		t.mu.Unlock()
		if ok {
			return ids, nil
		}
	}
	data, err := t.repo.ReadBlob(ctx, TreeBlob, id, nil)
	if err != nil {
		return nil, err
	}
	gotLevel, ids, err := decodeTreeNode(nil, data)
	if err != nil {
		return nil, corrupt("tree blob "+id.String(), "%v", err)
	}
	if want := t.g.entries(level, n); gotLevel != level || len(ids) != want {
		return nil, corrupt("tree blob "+id.String(), "level %d with %d IDs where level %d with %d belongs", gotLevel, len(ids), level, want)
	}
	if cache {
		t.mu.Lock()
		if len(t.inner) >= maxCachedInner {
			clear(t.inner)
		}
		t.inner[id] = ids
		t.mu.Unlock()
	}
	return ids, nil
}

// WalkNodes calls fn for every stored node of the block map, parents before
// children, skipping zero subtrees and nodes already in seen (to which it
// adds the nodes it visits): marking many restore points that share most of
// their maps reads each shared node once.
func (t *TreeReader) WalkNodes(ctx context.Context, seen map[ID]bool, fn func(id ID, level int, ids []ID) error) error {
	return t.walk(ctx, t.root, t.g.Height(), 0, seen, fn)
}

func (t *TreeReader) walk(ctx context.Context, id ID, level int, n int64, seen map[ID]bool, fn func(ID, int, []ID) error) error {
	if id.IsZero() || seen[id] {
		return nil
	}
	seen[id] = true
	ids, err := t.node(ctx, id, level, n, false)
	if err != nil {
		return err
	}
	if err := fn(id, level, ids); err != nil {
		return err
	}
	if level == 0 {
		return nil
	}
	for i, child := range ids {
		if err := t.walk(ctx, child, level-1, n*int64(t.g.Fanout)+int64(i), seen, fn); err != nil {
			return err
		}
	}
	return nil
}
