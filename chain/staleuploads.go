package chain

import (
	"context"
	"time"
)

// staleUploadAborter is a store whose interrupted uploads keep what they
// stored, unseen by List and paid for, until they are aborted: an S3
// bucket's incomplete multipart uploads. GC finds it as it finds a
// tempRemover, through the decorators' Unwrap (findStore).
type staleUploadAborter interface {
	// AbortStaleUploads aborts the store's uploads started more than
	// olderThan ago and returns how many it aborted.
	AbortStaleUploads(ctx context.Context, olderThan time.Duration) (int, error)
}

// abortStaleUploads aborts the uploads of the repository's store that are
// older than opts allows (LockStaleAfter by default: the age at which a
// lock's holder is taken for dead, so that no upload of a writer that
// still runs is aborted), and counts them in the report.
func (r *Repository) abortStaleUploads(ctx context.Context, opts GCOptions, report *GCReport) error {
	a, ok := findStore[staleUploadAborter](r.store)
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
