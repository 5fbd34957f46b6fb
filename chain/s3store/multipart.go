package s3store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// IncompleteUpload is a multipart upload that was started and neither
// completed nor aborted.
type IncompleteUpload struct {
	Name      string // the object's name in the store
	UploadID  string
	Initiated time.Time // by the server's clock
}

// AbortIncompleteUploads aborts the multipart uploads under the store's
// prefix that were started more than olderThan ago, and returns the ones
// it aborted. A Put that a crash (or a cancelled ctx, or a failure that
// minio-go could not clean up) interrupted leaves its parts in the
// bucket, unseen by List and paid for, until this runs; GC calls it.
// olderThan should be far longer than any upload takes (a day): the ages
// are measured with this host's clock against the server's.
//
// MinIO lists incomplete uploads only for the whole bucket or for one
// exact key, so the whole bucket is listed (a page at a time) and the
// uploads outside the prefix are left alone.
func (s *Store) AbortIncompleteUploads(ctx context.Context, olderThan time.Duration) ([]IncompleteUpload, error) {
	if err := s.knowRegion(ctx, "list incomplete uploads in", s.String()); err != nil {
		return nil, err
	}
	cutoff := time.Now().Add(-olderThan)
	var aborted []IncompleteUpload
	keyMarker, uploadIDMarker := "", ""
	for {
		page, err := s.core.ListMultipartUploads(ctx, s.bucket, "", keyMarker, uploadIDMarker, "", s.opts.ListPageSize)
		if err != nil {
			return aborted, s.wrap(ctx, "list incomplete uploads", s.String(), err)
		}
		for _, u := range page.Uploads {
			if !strings.HasPrefix(u.Key, s.prefix) || !u.Initiated.Before(cutoff) {
				continue
			}
			name := strings.TrimPrefix(u.Key, s.prefix)
			if err := s.core.AbortMultipartUpload(ctx, s.bucket, u.Key, u.UploadID); err != nil {
				err = s.wrap(ctx, "abort upload "+u.UploadID+" of", name, err)
				return aborted, fmt.Errorf("abort incomplete uploads: %w", err)
			}
			aborted = append(aborted, IncompleteUpload{Name: name, UploadID: u.UploadID, Initiated: u.Initiated})
		}
		if !page.IsTruncated || (page.NextKeyMarker == keyMarker && page.NextUploadIDMarker == uploadIDMarker) {
			return aborted, nil
		}
		keyMarker, uploadIDMarker = page.NextKeyMarker, page.NextUploadIDMarker
	}
}

// AbortStaleUploads is AbortIncompleteUploads that counts what it aborted:
// how chain's GC finds and calls it.
func (s *Store) AbortStaleUploads(ctx context.Context, olderThan time.Duration) (int, error) {
	aborted, err := s.AbortIncompleteUploads(ctx, olderThan)
	return len(aborted), err
}
