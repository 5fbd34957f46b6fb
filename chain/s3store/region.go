package s3store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// knowRegion looks the bucket's region up, once, with retries, before the
// first request that needs it. minio-go asks the server for it on a
// client's first request to a bucket (unless Options.Region is set), with
// a single request that it does not retry: a dropped connection or a 503
// there would fail the operation that happened to come first. Once the
// lookup succeeds minio-go caches the answer, and this costs nothing.
func (s *Store) knowRegion(ctx context.Context, op, name string) error {
	if s.opts.Region != "" || s.regionKnown.Load() {
		return nil
	}
	attempts := s.opts.MaxRetries
	if attempts <= 0 {
		attempts = 10 // minio-go's default for its own retries
	}
	limit := 200 * time.Millisecond // minio-go's DefaultRetryUnit
	for attempt := 1; ; attempt++ {
		_, err := s.client.GetBucketLocation(ctx, s.bucket)
		if err == nil {
			s.regionKnown.Store(true)
			return nil
		}
		err = s.wrap(ctx, op, name, fmt.Errorf("find the region of bucket %s: %w", s.bucket, err))
		if attempt >= attempts || !isTransient(err) {
			return err
		}
		t := time.NewTimer(rand.N(limit + 1)) // full jitter
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s %s: find the region of bucket %s: %w", op, name, s.bucket, ctx.Err())
		}
		limit = min(2*limit, time.Second) // minio-go's DefaultRetryCap
	}
}
