// Package objhttp holds what the object-store clients of chain/s3store and
// chain/azurestore need from HTTP and their SDKs do not give: a timeout for
// each request, sized by the bytes it moves; Retry-After honoured where the
// SDK ignores it; a count of the attempts made for one call; and the
// option defaults, key prefix and name rule both stores apply alike.
package objhttp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// Transport is an http.RoundTripper around another:
//
//   - each request gets its own timeout (the SDKs only have the caller's
//     ctx): Timeout plus the time its body takes at MinThroughput, and once
//     the answer's headers are in, as long again for the answer's body, so
//     that a stalled connection fails (and the SDK retries it) instead of
//     hanging until the caller gives up;
//   - with HoldRetryAfter, a 429 or 503 answer with a Retry-After header
//     is held back for as long as it asks (at most MaxRetryAfter) before
//     the SDK sees it and retries with its own backoff: for an SDK that
//     retries these statuses but ignores the header (minio-go);
//   - it counts the requests sent under a ctx that carries an
//     [AttemptCounter].
type Transport struct {
	Base           http.RoundTripper
	Timeout        time.Duration
	MinThroughput  int64 // bytes per second
	HoldRetryAfter bool
	MaxRetryAfter  time.Duration
}

// ErrRequestTimeout is in the error of a request the Transport cut off.
var ErrRequestTimeout = errors.New("request timed out")

// allowance is how long a request or answer moving n bytes may take.
func (t *Transport) allowance(n int64) time.Duration {
	d := t.Timeout
	if n > 0 && t.MinThroughput > 0 {
		d += time.Duration(float64(n) / float64(t.MinThroughput) * float64(time.Second))
	}
	return d
}

// RoundTrip sends req with its timeout and holds back a Retry-After answer.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if c, ok := req.Context().Value(attemptKey{}).(*AttemptCounter); ok {
		c.n.Add(1)
	}
	ctx, cancel := context.WithCancelCause(req.Context())
	timer := time.AfterFunc(t.allowance(req.ContentLength), func() { cancel(ErrRequestTimeout) })
	resp, err := t.Base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		timer.Stop()
		if errors.Is(context.Cause(ctx), ErrRequestTimeout) && req.Context().Err() == nil {
			err = fmt.Errorf("%w after %v: %w", ErrRequestTimeout, t.allowance(req.ContentLength), err)
		}
		cancel(nil)
		return nil, err
	}
	timer.Reset(t.allowance(resp.ContentLength))
	resp.Body = &timedBody{ReadCloser: resp.Body, done: func() { timer.Stop(); cancel(nil) }}
	if wait, ok := t.retryAfter(resp); ok {
		// Hold the answer back; its body is read after the wait, so the
		// body's time starts after it.
		timer.Stop()
		hold := time.NewTimer(wait)
		select {
		case <-hold.C:
		case <-req.Context().Done():
			hold.Stop()
		}
		timer.Reset(t.allowance(resp.ContentLength))
	}
	return resp, nil
}

// retryAfter returns the wait a throttling answer asks for.
func (t *Transport) retryAfter(resp *http.Response) (time.Duration, bool) {
	if !t.HoldRetryAfter || (resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable) {
		return 0, false
	}
	wait, ok := ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	if !ok {
		return 0, false
	}
	if t.MaxRetryAfter > 0 {
		wait = min(wait, t.MaxRetryAfter)
	}
	return wait, true
}

// ParseRetryAfter reads a Retry-After value, seconds or an HTTP date, as a
// wait from now.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		return time.Duration(min(secs, 1<<20)) * time.Second, true
	}
	if at, err := http.ParseTime(v); err == nil {
		return max(at.Sub(now), 0), true
	}
	return 0, false
}

// timedBody ends its request's timer and context when it is closed.
type timedBody struct {
	io.ReadCloser
	closed atomic.Bool
	done   func()
}

func (b *timedBody) Close() error {
	err := b.ReadCloser.Close()
	if b.closed.CompareAndSwap(false, true) {
		b.done()
	}
	return err
}

// AttemptCounter counts the HTTP requests sent under one context.
type AttemptCounter struct{ n atomic.Int32 }

// Attempts returns how many requests were sent.
func (c *AttemptCounter) Attempts() int { return int(c.n.Load()) }

type attemptKey struct{}

// WithAttemptCounter returns ctx carrying a counter that the Transport
// increments for every request sent under it (or under a ctx made from it).
func WithAttemptCounter(ctx context.Context) (context.Context, *AttemptCounter) {
	c := &AttemptCounter{}
	return context.WithValue(ctx, attemptKey{}, c), c
}
