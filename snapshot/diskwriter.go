package snapshot

import (
	"context"
	"sync/atomic"

	"github.com/diskpoint/diskpoint/blockdiff"
	"github.com/diskpoint/diskpoint/chain"
)

// blockSink takes what the scan of one disk finds: its changed blocks,
// from several goroutines at once, and every segment, in order, from one.
type blockSink interface {
	putBlock(ctx context.Context, b blockdiff.Block) error
	addSegment(ctx context.Context, s blockdiff.Segment) error
}

// diskWriter is the blockSink that stores: it compresses and stores changed
// blocks and builds the disk's block map.
type diskWriter struct {
	w          *chain.Writer
	dm         chain.DiskManifest // what is known before the scan
	tree       *chain.TreeBuilder
	parentTree *chain.TreeReader // nil without a usable parent
	changes    changePlan        // how the scan finds what changed since the parent

	stored    atomic.Int64 // bytes the disk's blocks added to packs
	newChunks atomic.Int64 // bytes of the blocks that added them
}

// newDiskWriter prepares the block map of disk src, size bytes, compared
// with parent if it has the repository's block size. It writes nothing yet.
func (c *Collection) newDiskWriter(w *chain.Writer, src DiskSource, size int64, parent *pointDisk) *diskWriter {
	cfg := c.repo.chain.Config()
	dw := &diskWriter{
		w:    w,
		dm:   chain.DiskManifest{Name: src.Name, Size: size, BlockSize: cfg.BlockSize},
		tree: chain.NewTreeBuilder(w, chain.Geometry{Size: size, BlockSize: cfg.BlockSize, Fanout: cfg.TreeFanout}),
	}
	if parent != nil && parent.disk.BlockSize == cfg.BlockSize {
		dw.dm.Parent = parent.point
		dw.parentTree = c.repo.chain.OpenTree(parent.disk)
	} else {
		parent = nil
	}
	dw.changes = src.plan(parent)
	dw.dm.ChangeSource, dw.dm.ChangeReason, dw.dm.Bitmap, dw.dm.BitmapRead = dw.changes.source, dw.changes.reason, dw.changes.bitmap, dw.changes.read
	return dw
}

func (dw *diskWriter) putBlock(ctx context.Context, b blockdiff.Block) error {
	n, err := dw.w.PutBlob(ctx, chain.DataBlob, b.ID, b.Data)
	if n > 0 {
		dw.stored.Add(int64(n))
		dw.newChunks.Add(int64(len(b.Data)))
	}
	return err
}

func (dw *diskWriter) addSegment(ctx context.Context, s blockdiff.Segment) error {
	if s.Reused {
		id, err := dw.parentTree.LeafID(ctx, s.Index)
		if err != nil {
			return err
		}
		return dw.tree.AddLeafID(ctx, id)
	}
	return dw.tree.AddLeaf(ctx, s.IDs)
}

// storedBytes is what the disk added to the repository so far.
func (dw *diskWriter) storedBytes() int64 { return dw.stored.Load() + dw.tree.StoredBytes() }

// finish writes the rest of the block map, once every segment was added.
func (dw *diskWriter) finish(ctx context.Context, stats blockdiff.Stats) (chain.DiskManifest, error) {
	dm := dw.dm
	root, err := dw.tree.Finish(ctx)
	if err != nil {
		return dm, err
	}
	dm.Root = root
	dm.ChangedBytes = stats.ChangedBytes
	dm.MetadataBytes = dw.tree.StoredBytes()
	dm.StoredBytes = dw.stored.Load() + dm.MetadataBytes
	dm.NewChunkBytes = dw.newChunks.Load()
	return dm, nil
}

// treeParent lets blockdiff read the parent's block IDs from its block map.
type treeParent struct{ tree *chain.TreeReader }

func (p treeParent) Size() int64 { return p.tree.Geometry().Size }

func (p treeParent) SegmentIDs(ctx context.Context, j int64, dst []chain.ID) ([]chain.ID, error) {
	return p.tree.Leaf(ctx, j, dst)
}

// scanDisk reads disk, compares it with dw's parent and hands what it
// finds to sink; storedBytes says, for progress reports, what the disk has
// added to the repository so far.
func (c *Collection) scanDisk(ctx context.Context, src DiskSource, disk *blockdiff.Disk, dw *diskWriter, sink blockSink, storedBytes func() int64, opts CreateOptions) (blockdiff.Stats, error) {
	cfg := c.repo.chain.Config()
	scanOpts := blockdiff.Options{
		BlockSize:     cfg.BlockSize,
		SegmentBlocks: cfg.TreeFanout,
		Workers:       opts.Workers,
		Hash:          c.repo.chain.HashBlob,
		Store:         sink.putBlock,
		Segment:       sink.addSegment,
	}
	if dw.parentTree != nil {
		scanOpts.Parent = treeParent{dw.parentTree}
		scanOpts.ChangedOnly, scanOpts.Changed = dw.changes.changedOnly, dw.changes.changed
	}
	if opts.Progress != nil {
		scanOpts.Progress = func(st blockdiff.Stats) {
			opts.Progress(Progress{Disk: src.Name, Scan: st, Bytes: storedBytes()})
		}
	}
	return blockdiff.Scan(ctx, disk, scanOpts)
}

// captureDisk scans one disk, storing its changed blocks as they are
// found, and writes its block map.
func (c *Collection) captureDisk(ctx context.Context, w *chain.Writer, src DiskSource, disk *blockdiff.Disk, parent *pointDisk, opts CreateOptions) (chain.DiskManifest, error) {
	dw := c.newDiskWriter(w, src, disk.Size, parent)
	stats, err := c.scanDisk(ctx, src, disk, dw, dw, dw.storedBytes, opts)
	if err != nil {
		return dw.dm, err
	}
	return dw.finish(ctx, stats)
}
