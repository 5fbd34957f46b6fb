package chain_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/chain/storetest"
)

// quickRetries retries at once (the waits are what the jitter picks: none).
func quickRetries(attempts int) chain.RetryOptions {
	return chain.RetryOptions{MaxAttempts: attempts, Jitter: func(time.Duration) time.Duration { return 0 }}
}

func TestRetryStoreRetriesTransientFailures(t *testing.T) {
	ctx := context.Background()
	faulty := storetest.NewFaultStore(chain.NewMemStore(), 1)
	if err := faulty.Put(ctx, "config", []byte("c")); err != nil {
		t.Fatal(err)
	}
	var waits []time.Duration
	opts := chain.RetryOptions{
		MaxAttempts: 5, BaseDelay: 10 * time.Millisecond, MaxDelay: 40 * time.Millisecond,
		Jitter: func(limit time.Duration) time.Duration { waits = append(waits, limit); return 0 },
	}
	s := chain.NewRetryStore(faulty, opts)

	// Three failures, then success on the fourth attempt.
	faulty.Inject(storetest.Fault{Op: storetest.OpGet, Times: 3, Err: errFlaky})
	got, err := s.Get(ctx, "config")
	if err != nil || string(got) != "c" {
		t.Fatalf("Get = %q, %v; want success after retries", got, err)
	}
	if n := faulty.Calls(storetest.OpGet); n != 4 {
		t.Errorf("Get tried %d times, want 4", n)
	}
	// The cap doubles from BaseDelay: 10, 20, 40 ms.
	if want := []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond}; !slices.Equal(waits, want) {
		t.Errorf("backoff caps %v, want %v", waits, want)
	}

	// Failing every time: MaxAttempts tries, and the error stays transient.
	faulty.Clear()
	faulty.Inject(storetest.Fault{Op: storetest.OpStat, Err: errFlaky})
	_, err = s.Stat(ctx, "config")
	if !errors.Is(err, chain.ErrTransient) {
		t.Errorf("Stat after the attempts ran out: %v, want ErrTransient", err)
	}
	if n := faulty.Calls(storetest.OpStat); n != 5 {
		t.Errorf("Stat tried %d times, want MaxAttempts = 5", n)
	}
	// The cap stops at MaxDelay.
	if want := []time.Duration{10, 20, 40, 40}; !slices.Equal(waits[3:], scale(want, time.Millisecond)) {
		t.Errorf("backoff caps %v, want %v ms", waits[3:], want)
	}
}

func scale(ds []time.Duration, unit time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d * unit
	}
	return out
}

func TestRetryStoreNeverRetriesPermanentErrors(t *testing.T) {
	ctx := context.Background()
	for _, permanent := range []error{chain.ErrNotFound, chain.ErrExists, chain.ErrInvalidName, chain.ErrCorrupt, syscall.EIO, errors.New("anything else")} {
		faulty := storetest.NewFaultStore(chain.NewMemStore(), 1)
		s := chain.NewRetryStore(faulty, quickRetries(5))
		faulty.Inject(storetest.Fault{Err: permanent})
		checks := map[storetest.Op]error{
			storetest.OpPut:         s.Put(ctx, "a", []byte("x")),
			storetest.OpPutIfAbsent: s.PutIfAbsent(ctx, "a", []byte("x")),
			storetest.OpReadAt:      s.ReadAt(ctx, "a", make([]byte, 1), 0),
			storetest.OpList:        s.List(ctx, "", func(chain.ObjectInfo) error { return nil }),
			storetest.OpDelete:      s.Delete(ctx, "a"),
		}
		_, checks[storetest.OpGet] = s.Get(ctx, "a")
		_, checks[storetest.OpStat] = s.Stat(ctx, "a")
		for op, err := range checks {
			if !errors.Is(err, permanent) {
				t.Errorf("%s with %v injected: %v", op, permanent, err)
			}
			if n := faulty.Calls(op); n != 1 {
				t.Errorf("%s failing with %v was tried %d times, want once", op, permanent, n)
			}
		}
	}
	// Not found is permanent even when a transient failure came first.
	faulty := storetest.NewFaultStore(chain.NewMemStore(), 1)
	faulty.Inject(storetest.Fault{Op: storetest.OpGet, Times: 1, Err: errFlaky})
	if _, err := chain.NewRetryStore(faulty, quickRetries(5)).Get(ctx, "missing"); !errors.Is(err, chain.ErrNotFound) {
		t.Errorf("Get of a missing object: %v, want ErrNotFound", err)
	}
	if n := faulty.Calls(storetest.OpGet); n != 2 {
		t.Errorf("Get tried %d times, want 2 (one transient failure, then not found)", n)
	}
}

// A cancelled context ends the wait between attempts at once, though the
// wait would last an hour.
func TestRetryStoreHonoursContextWhileWaiting(t *testing.T) {
	faulty := storetest.NewFaultStore(chain.NewMemStore(), 1)
	faulty.Inject(storetest.Fault{Err: errFlaky})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	waiting := make(chan struct{})
	s := chain.NewRetryStore(faulty, chain.RetryOptions{
		MaxAttempts: 3, BaseDelay: time.Hour,
		Jitter: func(limit time.Duration) time.Duration { return limit },
		OnRetry: func(op, name string, attempt int, err error, wait time.Duration) {
			if wait != time.Hour {
				t.Errorf("wait %v, want an hour", wait)
			}
			close(waiting)
		},
	})
	done := make(chan error)
	go func() { done <- s.Put(ctx, "a", []byte("x")) }()
	<-waiting
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) || !errors.Is(err, chain.ErrTransient) {
		t.Errorf("Put cancelled while waiting: %v, want the transient failure and context.Canceled", err)
	}
	if n := faulty.Calls(storetest.OpPut); n != 1 {
		t.Errorf("Put tried %d times, want 1", n)
	}
}

// A PutIfAbsent whose answer was lost finds its own object when retried:
// it succeeds. One that finds another writer's object fails with ErrExists.
func TestRetryStorePutIfAbsentAfterAmbiguousFailure(t *testing.T) {
	ctx := context.Background()
	faulty := storetest.NewFaultStore(chain.NewMemStore(), 1)
	s := chain.NewRetryStore(faulty, quickRetries(3))
	faulty.Inject(storetest.Fault{Op: storetest.OpPutIfAbsent, Times: 1, Err: errFlaky, After: true})
	if err := s.PutIfAbsent(ctx, "manifests/vm/p1", []byte("mine")); err != nil {
		t.Fatalf("PutIfAbsent that stored its object before failing: %v", err)
	}
	if n := faulty.Calls(storetest.OpPutIfAbsent); n != 2 {
		t.Errorf("PutIfAbsent tried %d times, want 2", n)
	}
	// Someone else's object, found after a failure that stored nothing.
	faulty.Inject(storetest.Fault{Op: storetest.OpPutIfAbsent, Times: 1, Err: errFlaky})
	if err := s.PutIfAbsent(ctx, "manifests/vm/p1", []byte("other")); !errors.Is(err, chain.ErrExists) {
		t.Errorf("PutIfAbsent over another writer's object: %v, want ErrExists", err)
	}
	if got, _ := faulty.Get(ctx, "manifests/vm/p1"); string(got) != "mine" {
		t.Errorf("object holds %q", got)
	}
	// Without an ambiguous failure there is no read back.
	gets := faulty.Calls(storetest.OpGet)
	if err := s.PutIfAbsent(ctx, "manifests/vm/p1", []byte("mine")); !errors.Is(err, chain.ErrExists) {
		t.Errorf("second PutIfAbsent of the same bytes: %v, want ErrExists", err)
	}
	if faulty.Calls(storetest.OpGet) != gets {
		t.Error("PutIfAbsent read the object back though no attempt had failed")
	}
}

// A listing that fails part way is retried, and fn sees each object once;
// fn's own error ends the listing without a retry, even a transient one.
// ListNames retries as List does.
func TestRetryStoreList(t *testing.T) {
	for _, tc := range []struct {
		name string
		list func(s *chain.RetryStore, ctx context.Context, prefix string, fn func(name string) error) error
	}{
		{"List", func(s *chain.RetryStore, ctx context.Context, prefix string, fn func(string) error) error {
			return s.List(ctx, prefix, func(i chain.ObjectInfo) error { return fn(i.Name) })
		}},
		{"ListNames", func(s *chain.RetryStore, ctx context.Context, prefix string, fn func(string) error) error {
			return s.ListNames(ctx, prefix, fn)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			faulty := storetest.NewFaultStore(chain.NewMemStore(), 1)
			for i := range 5 {
				if err := faulty.Put(ctx, fmt.Sprintf("index/%d", i), []byte("x")); err != nil {
					t.Fatal(err)
				}
			}
			s := chain.NewRetryStore(faulty, quickRetries(3))
			faulty.Inject(storetest.Fault{Op: storetest.OpList, Times: 1, Err: errFlaky, After: true})
			seen := map[string]int{}
			if err := tc.list(s, ctx, "index/", func(name string) error { seen[name]++; return nil }); err != nil {
				t.Fatal(err)
			}
			if len(seen) != 5 {
				t.Errorf("listed %v, want 5 objects", seen)
			}
			for name, n := range seen {
				if n != 1 {
					t.Errorf("fn saw %s %d times", name, n)
				}
			}
			calls := faulty.Calls(storetest.OpList)
			err := tc.list(s, ctx, "index/", func(string) error { return errFlaky })
			if !errors.Is(err, errFlaky) || faulty.Calls(storetest.OpList) != calls+1 {
				t.Errorf("fn's error: %v after %d listings, want it returned after one", err, faulty.Calls(storetest.OpList)-calls)
			}
		})
	}
}
