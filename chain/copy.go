package chain

import (
	"context"
	"fmt"
)

// DefaultCopyFlushEvery is how many bytes a copy moves between flushes
// when it is not told (Copier.FlushEvery, snapshot.CopyOptions.FlushEvery).
const DefaultCopyFlushEvery = 64 << 20

// CopyStats counts what a copy moved.
type CopyStats struct {
	Blobs        int64 `json:"blobs_copied"`
	Bytes        int64 `json:"bytes_copied"`  // plaintext
	Stored       int64 `json:"bytes_stored"`  // compressed, in the target
	BlobsPresent int64 `json:"blobs_present"` // already in the target, not moved
	// Covered is how much of the disks' logical size the copy has dealt
	// with, moved or found present: the measure of its progress, since
	// what it will move is not known until it is done.
	Covered int64 `json:"bytes_covered"`
}

// Copier moves the blobs of disk restore points from one repository into a
// Writer of another (or the same), moving only what the target lacks and
// checking every blob's hash as it reads it. It skips every subtree whose
// node the target already has: an interrupted copy, flushed now and then,
// resumes without moving again what it moved.
//
// That is sound because a repository whose index lists a tree node holds
// everything under it, even after a crash or a GC:
//   - a Writer stores a tree pack only once the packs of every blob its
//     nodes name are stored, and lists packs in its index files in the
//     order it stored them (see Writer's commit order); a copy is such a
//     writer too, and puts children before their parents;
//   - GC lists only the live tree nodes of the packs it keeps: a dead
//     node stays in its pack, unlisted, while what is under it may go;
//   - a tree node known only from a pack's own header (no index file
//     lists it) is readable but not held (see index.has).
type Copier struct {
	From *Repository
	To   *Writer
	// FlushEvery flushes the target (packs and index durable) after this
	// many bytes, so an interrupted copy keeps what it moved; 0 means 64 MiB.
	FlushEvery int64
	// Progress, if set, is called after each blob moved.
	Progress func(CopyStats)

	stats     CopyStats
	unflushed int64
}

// Stats returns what was moved so far.
func (c *Copier) Stats() CopyStats { return c.stats }

// CopyDisk copies the block map of d and every chunk it references.
func (c *Copier) CopyDisk(ctx context.Context, d DiskManifest) error {
	if c.From.config.BlockSize != d.BlockSize || c.From.config.TreeFanout != c.To.repo.config.TreeFanout || c.To.repo.config.BlockSize != d.BlockSize {
		return fmt.Errorf("copy disk %q: the target repository's block size or tree fanout differs from the source's", d.Name)
	}
	if !c.From.sameIDs(c.To.repo) {
		return fmt.Errorf("copy disk %q: the repositories name chunks differently (one is encrypted, or they have different keys)", d.Name)
	}
	t := c.From.OpenTree(d)
	return c.copyNode(ctx, t, d.Root, t.g.Height(), 0)
}

// CopyBlob copies one data blob (a VM configuration, say).
func (c *Copier) CopyBlob(ctx context.Context, t BlobType, id ID) error {
	if !c.From.sameIDs(c.To.repo) {
		return fmt.Errorf("copy: the repositories name chunks differently (one is encrypted, or they have different keys)")
	}
	if id.IsZero() {
		return nil
	}
	if has, err := c.To.has(ctx, id); err != nil || has {
		return err
	}
	return c.move(ctx, t, id)
}

// Flush makes everything copied so far durable in the target.
func (c *Copier) Flush(ctx context.Context) error {
	c.unflushed = 0
	return c.To.Flush(ctx)
}

func (c *Copier) copyNode(ctx context.Context, t *TreeReader, id ID, level int, n int64) error {
	if id.IsZero() {
		c.cover(t.g.SubtreeBytes(level, n))
		return nil
	}
	if has, err := c.To.has(ctx, id); err != nil {
		return fmt.Errorf("copy: %w", err)
	} else if has {
		c.stats.BlobsPresent++
		c.cover(t.g.SubtreeBytes(level, n))
		return nil // and so everything under it
	}
	ids, err := t.node(ctx, id, level, n, false)
	if err != nil {
		return err
	}
	for i, child := range ids {
		if level == 0 {
			if child.IsZero() {
				continue
			}
			if has, err := c.To.has(ctx, child); err != nil {
				return fmt.Errorf("copy: %w", err)
			} else if has {
				continue
			}
			if err := c.move(ctx, DataBlob, child); err != nil {
				return err
			}
			continue
		}
		if err := c.copyNode(ctx, t, child, level-1, n*int64(t.g.Fanout)+int64(i)); err != nil {
			return err
		}
	}
	if level == 0 {
		c.cover(t.g.LeafBytes(n))
	}
	return c.move(ctx, TreeBlob, id)
}

// cover counts n more bytes of the disk as dealt with, and reports it.
func (c *Copier) cover(n int64) {
	c.stats.Covered += n
	if c.Progress != nil {
		c.Progress(c.stats)
	}
}

func (c *Copier) move(ctx context.Context, t BlobType, id ID) error {
	data, err := c.From.ReadBlob(ctx, t, id, nil) // checks the hash
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	stored, err := c.To.PutBlob(ctx, t, id, data)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	c.stats.Blobs++
	c.stats.Bytes += int64(len(data))
	c.stats.Stored += int64(stored)
	if c.Progress != nil {
		c.Progress(c.stats)
	}
	c.unflushed += int64(len(data))
	every := c.FlushEvery
	if every <= 0 {
		every = DefaultCopyFlushEvery
	}
	if c.unflushed >= every {
		return c.Flush(ctx)
	}
	return nil
}
