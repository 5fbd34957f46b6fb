package chain

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
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

	mu        sync.Mutex // stats and unflushed, as a leaf's chunks are copied in parallel
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

// Flush makes everything copied so far durable in the target. A version 2
// target's small index files, one a flush, are compacted as they pile up
// (see compactIndex), not only when the copy commits: every lookup of the
// copy asks every file's filter.
func (c *Copier) Flush(ctx context.Context) error {
	c.unflushed = 0
	if err := c.To.Flush(ctx); err != nil {
		return err
	}
	c.To.repo.compactIndexAfterCommit(ctx, c.To.lock.stillHeld)
	return nil
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
	if x, ok := c.From.index().(*indexV2Set); ok && level == 0 {
		if err := c.copyLeafV2(ctx, x, ids); err != nil {
			return err
		}
		c.cover(t.g.LeafBytes(n))
		return c.move(ctx, TreeBlob, id)
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
	if _, err := c.put(ctx, t, id, nil, nil); err != nil {
		return err
	}
	return c.flushIfDue(ctx)
}

// put copies blob id, reading it where e says when e is not nil (a copy
// that looked its chunks up in a batch), else where the index says, into
// buf's memory when it is large enough. It returns the memory it read
// into, for the caller's next put (PutBlob keeps none of it). It is safe
// for concurrent use, with a buf per goroutine.
func (c *Copier) put(ctx context.Context, t BlobType, id ID, e *indexEntry, buf []byte) ([]byte, error) {
	var data []byte
	var err error
	if e != nil && e.Type != t {
		e = nil // ReadBlob reports it
	}
	if e != nil {
		data, err = c.From.readBlobAt(ctx, e.Pack, e.packEntry, buf) // checks the hash
	}
	if e == nil || err != nil && mayHaveMoved(err) {
		data, err = c.From.ReadBlob(ctx, t, id, buf) // a GC may have moved it: reloads
	}
	if err != nil {
		return buf, fmt.Errorf("copy: %w", err)
	}
	stored, err := c.To.PutBlob(ctx, t, id, data)
	if err != nil {
		return data, fmt.Errorf("copy: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.Blobs++
	c.stats.Bytes += int64(len(data))
	c.stats.Stored += int64(stored)
	if c.Progress != nil {
		c.Progress(c.stats)
	}
	c.unflushed += int64(len(data))
	return data, nil
}

// copyLeafV2 copies the chunks of a leaf node that the target lacks, from
// a version 2 source: it looks them up in one sorted batch, a file at a
// time (lookupBatchIn), where a chunk at a time reads a bucket each, and
// reads, checks and stores them on up to GOMAXPROCS goroutines, since
// decompressing, hashing and compressing are where a copy's time goes.
// All are stored before the caller stores the leaf node (commit order).
func (c *Copier) copyLeafV2(ctx context.Context, x *indexV2Set, ids []ID) error {
	var need []ID
	for _, b := range ids {
		if b.IsZero() {
			continue
		}
		has, err := c.To.has(ctx, b)
		if err != nil {
			return fmt.Errorf("copy: %w", err)
		}
		if !has {
			need = append(need, b)
		}
	}
	need = sortIDs(need) // a leaf may name a chunk twice
	if len(need) == 0 {
		return nil
	}
	x.mu.RLock()
	files := x.files
	x.mu.RUnlock()
	found := make(map[ID]*indexEntry, len(need))
	_, err := lookupBatchIn(ctx, files, slices.Clone(need), func(id ID, _, _ int, e indexEntry) error {
		found[id] = &e
		return nil
	})
	if err != nil {
		clear(found) // looked up one by one instead
	}
	// A few workers that take the chunks in turn, each decoding into one
	// buffer, not a goroutine and a buffer a chunk: each goroutine's stack
	// grows to what decompressing and hashing take, and growing (copying)
	// a fresh one per chunk cost a tenth of a copy's CPU, beside the
	// allocation, clearing and collection of a block's memory per chunk.
	err = inWorkers(ctx, runtime.GOMAXPROCS(0), len(need), func(ctx context.Context) func(i int) error {
		var buf []byte
		return func(i int) (err error) {
			buf, err = c.put(ctx, DataBlob, need[i], found[need[i]], buf)
			return err
		}
	})
	if err != nil {
		return err
	}
	return c.flushIfDue(ctx)
}

// flushIfDue flushes the target once FlushEvery bytes were copied since
// the last flush.
func (c *Copier) flushIfDue(ctx context.Context) error {
	every := c.FlushEvery
	if every <= 0 {
		every = DefaultCopyFlushEvery
	}
	if c.unflushed >= every {
		return c.Flush(ctx)
	}
	return nil
}
