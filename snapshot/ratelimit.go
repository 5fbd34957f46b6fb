package snapshot

import (
	"errors"
	"fmt"
	"time"
)

// ErrThrottled: a rate limit refused the call; the error is a
// *ThrottledError saying when to retry.
var ErrThrottled = errors.New("throttled")

// RateLimit allows at most Max calls in any window of length Per.
type RateLimit struct {
	Max int
	Per time.Duration
}

// AzureRateLimit is Azure's limit on restore points: 3 an hour, counted per
// collection and consistency mode (and for copies, per target collection).
var AzureRateLimit = RateLimit{Max: 3, Per: time.Hour}

// ThrottledError is a call refused by a RateLimit. It wraps ErrThrottled.
type ThrottledError struct {
	Collection string
	What       string // "application-consistent creates", "copies"
	Limit      RateLimit
	RetryAfter time.Duration
}

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("collection %q: %s limited to %d per %s: %s; retry after %s",
		e.Collection, e.What, e.Limit.Max, e.Limit.Per, ErrThrottled, e.RetryAfter.Round(time.Second))
}

func (e *ThrottledError) Unwrap() error { return ErrThrottled }

// retryAfter says how long until one more call fits, given the times of
// earlier calls; 0 means now. It also returns the history with calls older
// than the window dropped, for the caller to keep.
func (l RateLimit) retryAfter(history []time.Time, now time.Time) (time.Duration, []time.Time) {
	var recent []time.Time
	for _, t := range history {
		if now.Sub(t) < l.Per {
			recent = append(recent, t)
		}
	}
	if len(recent) < l.Max {
		return 0, recent
	}
	// The call that leaves the window first makes room: the len-Max'th
	// newest, which with sorted history is recent[len(recent)-Max].
	oldest := recent[len(recent)-l.Max]
	return oldest.Add(l.Per).Sub(now), recent
}
