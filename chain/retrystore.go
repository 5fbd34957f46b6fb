package chain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// RetryStore is a [Store] that retries the failures of the Store it wraps
// that wrap ErrTransient, waiting between attempts with exponential backoff
// and full jitter (a random wait between zero and a cap that doubles with
// each attempt, so that clients that failed together do not retry
// together). Permanent errors (ErrNotFound, ErrExists, ErrInvalidName,
// ErrCorrupt, and anything that does not wrap ErrTransient) are returned at
// once. A wait ends early when ctx is done. When the attempts run out, the
// last error is returned; it still wraps ErrTransient.
//
// Writes are retried as well as reads: Put replaces, so a retried Put that
// had in fact succeeded does no harm, and a retried Delete of an object
// that a failed attempt removed succeeds (or reports ErrNotFound, which
// callers treat alike). See [RetryStore.PutIfAbsent] for the one ambiguous
// case, and [RetryStore.List] for listings.
type RetryStore struct {
	store Store
	opts  RetryOptions
}

var _ Store = (*RetryStore)(nil)

// RetryOptions says how a [RetryStore] retries. Zero fields take defaults.
type RetryOptions struct {
	// MaxAttempts is how many times an operation is tried in all
	// (default 8: with the default delays, about 13 s of waiting at most).
	MaxAttempts int
	// BaseDelay caps the wait before the second attempt; the cap doubles for
	// each attempt after (default 100 ms).
	BaseDelay time.Duration
	// MaxDelay is the largest cap (default 10 s).
	MaxDelay time.Duration
	// Jitter picks the wait for a cap: a duration in [0, cap]. The default
	// picks uniformly at random ("full jitter").
	Jitter func(limit time.Duration) time.Duration
	// OnRetry, if set, is called before each wait with the attempt that
	// failed (1 for the first), its error and the wait: for logging.
	OnRetry func(op, name string, attempt int, err error, wait time.Duration)
}

// Default retry settings.
const (
	DefaultRetryAttempts  = 8
	DefaultRetryBaseDelay = 100 * time.Millisecond
	DefaultRetryMaxDelay  = 10 * time.Second
)

// NewRetryStore returns store wrapped in a RetryStore.
func NewRetryStore(store Store, opts RetryOptions) *RetryStore {
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultRetryAttempts
	}
	if opts.BaseDelay <= 0 {
		opts.BaseDelay = DefaultRetryBaseDelay
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = DefaultRetryMaxDelay
	}
	if opts.MaxDelay < opts.BaseDelay {
		opts.MaxDelay = opts.BaseDelay
	}
	if opts.Jitter == nil {
		opts.Jitter = func(limit time.Duration) time.Duration { return rand.N(limit + 1) }
	}
	return &RetryStore{store: store, opts: opts}
}

// Unwrap returns the wrapped store, for callers that look for an optional
// method of the store underneath (such as LocalStore.RemoveTemp).
func (s *RetryStore) Unwrap() Store { return s.store }

// retry runs try until it succeeds, fails permanently, ctx is done or the
// attempts run out.
func (s *RetryStore) retry(ctx context.Context, op, name string, try func() error) error {
	limit := s.opts.BaseDelay
	for attempt := 1; ; attempt++ {
		err := try()
		if err == nil || !errors.Is(err, ErrTransient) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w; not retried: %w", err, ctx.Err())
		}
		if attempt >= s.opts.MaxAttempts {
			return fmt.Errorf("%w (gave up after %d attempts)", err, attempt)
		}
		wait := s.opts.Jitter(limit)
		if s.opts.OnRetry != nil {
			s.opts.OnRetry(op, name, attempt, err, wait)
		}
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("%w; not retried: %w", err, ctx.Err())
		}
		limit = min(2*limit, s.opts.MaxDelay)
	}
}

// Put stores data under name, retrying transient failures.
func (s *RetryStore) Put(ctx context.Context, name string, data []byte) error {
	return s.retry(ctx, "put", name, func() error { return s.store.Put(ctx, name, data) })
}

// PutIfAbsent creates the object, retrying transient failures. A failure
// is ambiguous: the object may have been stored before the answer was
// lost, and the retry then finds it and gets ErrExists. PutIfAbsent reads
// the object back in that case (and only then): if it holds exactly data,
// the earlier attempt is taken to have succeeded and nil is returned; if it
// holds anything else, someone else created it and the ErrExists stands.
// An object with the same bytes written by another caller is taken for
// ours: for what the repository creates this way (a config, a manifest, a
// lock with a random name) the same bytes mean the same object.
func (s *RetryStore) PutIfAbsent(ctx context.Context, name string, data []byte) error {
	ambiguous := false
	err := s.retry(ctx, "put-if-absent", name, func() error {
		err := s.store.PutIfAbsent(ctx, name, data)
		if errors.Is(err, ErrTransient) {
			ambiguous = true
		}
		return err
	})
	if !ambiguous || !errors.Is(err, ErrExists) {
		return err
	}
	stored, gerr := s.Get(ctx, name)
	if gerr != nil {
		return fmt.Errorf("%w (after an attempt that may have stored it, which could not be read back: %w)", err, gerr)
	}
	if bytes.Equal(stored, data) {
		return nil
	}
	return err
}

// Get returns the object, retrying transient failures.
func (s *RetryStore) Get(ctx context.Context, name string) ([]byte, error) {
	var data []byte
	err := s.retry(ctx, "get", name, func() (err error) {
		data, err = s.store.Get(ctx, name)
		return err
	})
	return data, err
}

// ReadAt fills p from the object at off, retrying transient failures.
func (s *RetryStore) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	return s.retry(ctx, "read", name, func() error { return s.store.ReadAt(ctx, name, p, off) })
}

// Stat describes the object, retrying transient failures.
func (s *RetryStore) Stat(ctx context.Context, name string) (ObjectInfo, error) {
	var info ObjectInfo
	err := s.retry(ctx, "stat", name, func() (err error) {
		info, err = s.store.Stat(ctx, name)
		return err
	})
	return info, err
}

// List calls fn for each object under prefix, retrying a listing that
// failed transiently. A retried listing starts again from the beginning;
// objects fn has already seen are skipped, so fn sees each name once. An
// error from fn is never retried.
func (s *RetryStore) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	return retryListing(ctx, s, prefix, func(info ObjectInfo) string { return info.Name },
		func(each func(ObjectInfo) error) error { return s.store.List(ctx, prefix, each) }, fn)
}

// retryListing runs list under s's retries: a retried listing starts again
// from the beginning, and an item whose name fn has already seen is
// skipped, so fn sees each name once. An error from fn is never retried.
func retryListing[T any](ctx context.Context, s *RetryStore, prefix string, name func(T) string, list func(each func(T) error) error, fn func(T) error) error {
	seen := map[string]bool{}
	var fnErr error
	err := s.retry(ctx, "list", prefix, func() error {
		err := list(func(item T) error {
			n := name(item)
			if seen[n] {
				return nil
			}
			seen[n] = true
			if err := fn(item); err != nil {
				fnErr = err
				return err
			}
			return nil
		})
		if fnErr != nil {
			return nil // stop: the caller's error is never retried, whatever it wraps
		}
		return err
	})
	if fnErr != nil {
		return fnErr
	}
	return err
}

// Delete removes the object, retrying transient failures.
func (s *RetryStore) Delete(ctx context.Context, name string) error {
	return s.retry(ctx, "delete", name, func() error { return s.store.Delete(ctx, name) })
}

// Close closes the wrapped store.
func (s *RetryStore) Close() error { return s.store.Close() }
