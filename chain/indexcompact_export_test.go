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
