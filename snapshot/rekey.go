package snapshot

import (
	"context"
	"fmt"

	"github.com/diskpoint/diskpoint/blockdiff"
	"github.com/diskpoint/diskpoint/chain"
)

// sameChunkNames reports whether two repositories name chunks alike: both
// unencrypted, or encrypted with the same key. Only then can a copy move
// chunks and block-map nodes as they are.
func sameChunkNames(a, b *chain.Repository) bool {
	probe := []byte("diskpoint: do these repositories name chunks alike?")
	return a.HashBlob(probe) == b.HashBlob(probe)
}

// rekeyCopier copies restore points between repositories that name chunks
// differently (different keys, or one encrypted and one not). Chunk IDs are
// keyed, so every chunk is read and checked with the source's key, named
// again with the target's, and stored unless the target has it; each block
// map is built anew, through the same writer and tree builder a create
// uses, so the target's crash-safety rules hold. An interrupted copy keeps
// what it flushed; running it again reads everything but stores only the
// chunks still missing.
type rekeyCopier struct {
	from       *chain.Repository
	to         *chain.Writer
	flushEvery int64
	progress   func(chain.CopyStats)

	stats     chain.CopyStats
	unflushed int64
}

// config copies the data blob id (a VM configuration) and returns its ID
// in the target.
func (c *rekeyCopier) config(ctx context.Context, id chain.ID) (chain.ID, error) {
	if id.IsZero() {
		return id, nil
	}
	data, err := c.from.ReadBlob(ctx, chain.DataBlob, id, nil) // checks the hash
	if err != nil {
		return chain.ID{}, fmt.Errorf("copy VM config: %w", err)
	}
	return c.put(ctx, data)
}

// disk copies disk d's chunks and returns its record in the target, with
// the root of its new block map.
func (c *rekeyCopier) disk(ctx context.Context, d chain.DiskManifest) (chain.DiskManifest, error) {
	tree := c.from.OpenTree(d)
	g := tree.Geometry()
	if cfg := c.to.Repository().Config(); cfg.BlockSize != d.BlockSize || cfg.TreeFanout != g.Fanout {
		return d, fmt.Errorf("copy disk %q: the target repository's block size or tree fanout differs from the source's", d.Name)
	}
	builder := chain.NewTreeBuilder(c.to, g)
	var ids []chain.ID
	for j := range g.Leaves() {
		var err error
		if ids, err = tree.Leaf(ctx, j, ids[:0]); err != nil {
			return d, err
		}
		renamed := make([]chain.ID, len(ids)) // zero IDs (all-zero blocks) stay zero
		err = c.from.ReadBlobs(ctx, chain.DataBlob, ids, nil, func(i int, data []byte) error {
			var err error
			renamed[i], err = c.put(ctx, data)
			return err
		})
		if err != nil {
			return d, err
		}
		if err := builder.AddLeaf(ctx, renamed); err != nil {
			return d, err
		}
		c.stats.Covered += g.LeafBytes(j)
		if c.progress != nil {
			c.progress(c.stats)
		}
	}
	root, err := builder.Finish(ctx)
	if err != nil {
		return d, err
	}
	d.Root = root
	return d, nil
}

// put stores one chunk under the target's name for it.
func (c *rekeyCopier) put(ctx context.Context, data []byte) (chain.ID, error) {
	id := blockdiff.BlockID(data, c.to.Repository().HashBlob)
	if id.IsZero() {
		return id, nil
	}
	if c.to.Has(id) {
		c.stats.BlobsPresent++
		return id, nil
	}
	stored, err := c.to.PutBlob(ctx, chain.DataBlob, id, data)
	if err != nil {
		return chain.ID{}, fmt.Errorf("copy: %w", err)
	}
	c.stats.Blobs++
	c.stats.Bytes += int64(len(data))
	c.stats.Stored += int64(stored)
	if c.progress != nil {
		c.progress(c.stats)
	}
	c.unflushed += int64(len(data))
	every := c.flushEvery
	if every <= 0 {
		every = chain.DefaultCopyFlushEvery
	}
	if c.unflushed >= every {
		c.unflushed = 0
		return id, c.to.Flush(ctx)
	}
	return id, nil
}
