package chain

import (
	"context"
	"time"
)

// staleUploadAborter is a store whose interrupted uploads keep what they
// stored, unseen by List and paid for, until they are aborted: an S3
// bucket's incomplete multipart uploads. GC finds it as it finds a
// tempRemover, through the decorators' Unwrap.
type staleUploadAborter interface {
	// AbortStaleUploads aborts the store's uploads started more than
	// olderThan ago and returns how many it aborted.
	AbortStaleUploads(ctx context.Context, olderThan time.Duration) (int, error)
}

// findStaleUploadAborter returns the store, or a store it wraps, that
// keeps interrupted uploads.
func findStaleUploadAborter(store Store) (staleUploadAborter, bool) {
	for store != nil {
		if a, ok := store.(staleUploadAborter); ok {
			return a, true
		}
		unwrapper, ok := store.(interface{ Unwrap() Store })
		if !ok {
			return nil, false
		}
		store = unwrapper.Unwrap()
	}
	return nil, false
}

// abortStaleUploads aborts the uploads of the repository's store that are
// older than opts allows (LockStaleAfter by default: the age at which a
// lock's holder is taken for dead, so that no upload of a writer that
// still runs is aborted), and counts them in the report.
func (r *Repository) abortStaleUploads(ctx context.Context, opts GCOptions, report *GCReport) error {
	a, ok := findStaleUploadAborter(r.store)
	if !ok || opts.DryRun {
		return nil
	}
	age := opts.IncompleteUploadAge
	if age <= 0 {
		age = LockStaleAfter
	}
	n, err := a.AbortStaleUploads(ctx, age)
	report.UploadsAborted += n
	return err
}
