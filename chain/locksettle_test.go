package chain_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
)

// countSettles replaces the lock takers' wait before their second look
// for the rest of the test: it counts the waits, runs during (if set) in
// each one, and returns at once.
func countSettles(t *testing.T, during func()) *atomic.Int32 {
	t.Helper()
	var n atomic.Int32
	t.Cleanup(chain.SetLockSettleWait(func(ctx context.Context, d time.Duration) error {
		n.Add(1)
		if during != nil {
			during()
		}
		return nil
	}))
	return &n
}

// unlistedStore is a store that promises nothing of its listings: it
// neither declares chain.LinearizableLister nor unwraps to a store that
// does (a third party's store, say).
type unlistedStore struct{ chain.Store }

// cachedListing decorates a store whose listing is linearizable with one
// that may not be (a listing served from a cache), and says so.
type cachedListing struct{ chain.Store }

func (s cachedListing) Unwrap() chain.Store      { return s.Store }
func (s cachedListing) ListIsLinearizable() bool { return false }

// takeEveryLock takes a shared repository lock (a writer's), a collection
// lock and the exclusive one (GC's), one after the other, and releases
// each.
func takeEveryLock(t *testing.T, repo *chain.Repository) {
	t.Helper()
	ctx := context.Background()
	w, err := repo.NewWriter(ctx, "create")
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	unlock, err := repo.LockCollection(ctx, "vm", "create", 0)
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	if _, err := repo.GC(ctx, chain.GCOptions{}); err != nil {
		t.Fatal(err)
	}
}

// On a store whose creates and listings are linearizable (LocalStore,
// MemStore, and through decorators that unwrap to them), a lock taker
// looks once and does not wait: of two takers whose lock objects appear
// at the same moment, the one that lists last sees the other's. A
// conflicting lock is still found by that one look.
func TestLockOnLinearizableStoreDoesNotSettle(t *testing.T) {
	local, err := chain.NewLocalStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		store chain.Store
	}{
		{"MemStore", chain.NewMemStore()},
		{"LocalStore", local},
		{"RetryStore over MemStore", chain.NewRetryStore(chain.NewMemStore(), chain.RetryOptions{})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			settles := countSettles(t, nil)
			repo := newRepoOn(t, tc.store)
			takeEveryLock(t, repo)
			if n := settles.Load(); n != 0 {
				t.Fatalf("lock takers waited %d times before looking again; want none on a store with linearizable listing", n)
			}
			plantLock(t, tc.store, "rival", liveLock("create", false))
			if _, err := repo.GC(context.Background(), chain.GCOptions{}); !errors.Is(err, chain.ErrLocked) || !strings.Contains(err.Error(), "create") {
				t.Fatalf("GC beside a create's lock: %v, want ErrLocked naming the create", err)
			}
		})
	}
}

// On a store that promises nothing of its listings, or behind a decorator
// that says its listing is not linearizable, a lock taker still waits
// after its first look and looks again: a conflicting lock that appears
// during the wait (written at the same moment as ours, and listed late)
// is found, and the taker backs off.
func TestLockOnOtherStoreSettlesAndLooksAgain(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(chain.Store) chain.Store
	}{
		{"store without the promise", func(s chain.Store) chain.Store { return unlistedStore{s} }},
		{"decorator that breaks it", func(s chain.Store) chain.Store { return cachedListing{s} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			mem := chain.NewMemStore()
			store := tc.wrap(mem)
			repo := newRepoOn(t, store)
			var rival atomic.Bool
			settles := countSettles(t, func() {
				if rival.Load() {
					plantLock(t, mem, "rival", liveLock("create", false))
				}
			})
			takeEveryLock(t, repo)
			if n := settles.Load(); n != 3 {
				t.Fatalf("three lock takers waited %d times before looking again; want once each", n)
			}

			rival.Store(true)
			if _, err := repo.GC(ctx, chain.GCOptions{}); !errors.Is(err, chain.ErrLocked) || !strings.Contains(err.Error(), "create") {
				t.Fatalf("GC whose rival's lock appeared during its wait: %v, want ErrLocked naming the create", err)
			}
			names := lockNames(t, mem)
			if len(names) != 1 || names[0] != "locks/rival" {
				t.Fatalf("locks after the GC backed off: %v, want only the rival's", names)
			}
		})
	}
}
