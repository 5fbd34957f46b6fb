package chain

import "context"

// SetIndexCompactAt sets how many small index files a version 2
// repository tolerates before a writer compacts them (indexCompactAt).
func SetIndexCompactAt(n int) (restore func()) {
	old := indexCompactAt
	indexCompactAt = n
	return func() { indexCompactAt = old }
}

// CompactIndex runs a compaction of r's index files, as a writer does
// after its commit, and returns how many files it merged and deleted.
func CompactIndex(ctx context.Context, r *Repository) (merged, deleted int, err error) {
	done, err := r.compactIndex(ctx, func(context.Context) error { return nil })
	return done.Inputs, done.Deleted, err
}

// SetIndexV2Batches sets how many IDs GC's mark and verify look up in one
// sorted batch on version 2 (indexV2MarkBatch, verifyLeafBatch).
// GC's mark also reads tree nodes n/100 at a time (markNodeWindow), so
// that small batches make small windows too.
func SetIndexV2Batches(n int) (restore func()) {
	mark, leaf, window := indexV2MarkBatch, verifyLeafBatch, markNodeWindow
	indexV2MarkBatch, verifyLeafBatch, markNodeWindow = n, n, max(1, n/100)
	return func() { indexV2MarkBatch, verifyLeafBatch, markNodeWindow = mark, leaf, window }
}

// IndexV2BatchBytes is the memory of one batch of IDs that GC's mark or
// verify looks up at once on version 2: a constant, not a cost per blob.
func IndexV2BatchBytes() int { return max(indexV2MarkBatch, verifyLeafBatch) * IDSize }

// IndexCompactTier is the tier of a small index file of size bytes
// (indexCompactTier): compaction merges files of one tier only.
func IndexCompactTier(size int64) int { return indexCompactTier(size) }

// IndexCompactSmallBytes is the size below which an index file is small:
// compaction merges only small files.
const IndexCompactSmallBytes = indexCompactSmallBytes
