package chain

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

// Locks keep GC from sweeping what an in-flight create is about to
// reference, across processes and hosts sharing a repository. Creates and
// verifies hold a shared lock; GC holds an exclusive one. A lock is an object
// under "locks/" naming its holder; the holder refreshes it while it works, so
// a lock whose holder crashed goes stale and is ignored (and removed) once it
// has not been refreshed for LockStaleAfter, or at once when its holder was a
// process on this host that no longer exists. A holder that cannot refresh
// its lock for LockStaleAfter/2 gives up (ErrLockLost) long before anyone
// may take the lock for stale. chain/FORMAT.md's "Safety model" says why
// this is enough.
var (
	// LockStaleAfter: a lock not refreshed for this long is stale.
	LockStaleAfter = 30 * time.Minute
	// lockSettle: after writing its lock and finding no conflicting one, a
	// taker waits this long and looks again, so that two processes whose
	// lock objects appeared at the same moment cannot both miss the other's.
	// Only on a store that does not promise linearizable listing (see
	// LinearizableLister): on one that does, the first look is enough.
	lockSettle      = 100 * time.Millisecond
	lockRefreshEach = 5 * time.Minute
	// lockSettleWait waits out lockSettle; a test replaces it to count the
	// waits and to act during one.
	lockSettleWait = func(ctx context.Context, d time.Duration) error {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
)

// LinearizableLister is an optional interface of a [Store] whose creates
// and listings are linearizable with each other: once PutIfAbsent has
// returned, every List that starts afterwards, in any process on any host,
// lists the object. A local directory keeps it (a file is in the directory
// once the link that created it returned), and so do S3 (strong
// list-after-write consistency since December 2020), MinIO and Azure Blob
// Storage.
//
// A lock taker on such a store does not wait and look again after its
// first look (chain/FORMAT.md, "Locks"). It is found through the Unwrap
// chain of decorators; a decorator whose List or PutIfAbsent could break
// the promise (a listing served from a cache, say) implements it itself,
// returning false.
type LinearizableLister interface {
	// ListIsLinearizable reports whether the store keeps the promise.
	ListIsLinearizable() bool
}

// settlesLocks says whether a lock taker on store must wait lockSettle and
// look again: unless the store (or one it decorates) promises linearizable
// listing.
func settlesLocks(store Store) bool {
	l, ok := findStore[LinearizableLister](store)
	return !ok || !l.ListIsLinearizable()
}

// ErrLockLost: the operation's lock could not be refreshed for so long that
// another process might soon take it for stale, so the operation was
// stopped: its context is cancelled with this cause, and it commits nothing.
var ErrLockLost = errors.New("repository lock lost")

const lockPrefix = "locks/"

// LockInfo is what a lock object records about its holder.
type LockInfo struct {
	// Collection, when set, makes this a collection lock: held by a create,
	// it conflicts only with other locks of the same collection.
	Collection string `json:"collection,omitempty"`
	// Exclusive repository locks (GC) conflict with every other repository lock.
	Exclusive bool   `json:"exclusive"`
	Operation string `json:"operation"`
	Host      string `json:"host"`
	PID       int    `json:"pid"`
	// ProcessSpace names the boot and PID namespace PID belongs to (see
	// processSpace); a holder is checked for by PID only from the same one.
	ProcessSpace string    `json:"process_space,omitempty"`
	Created      time.Time `json:"created"`
	Refreshed    time.Time `json:"refreshed"`
	// Reader locks (a restore, an NBD export, a diff, the source of a copy)
	// conflict with nothing. GC marks their Roots, the blobs they read
	// from, and keeps the packs they may read through an index they loaded
	// at IndexLoaded (see readerlock.go).
	Reader      bool      `json:"reader,omitempty"`
	Roots       []ID      `json:"roots,omitempty"`
	IndexLoaded time.Time `json:"index_loaded,omitzero"`
}

func (l LockInfo) String() string {
	kind := "shared"
	switch {
	case l.Reader:
		kind = "reader"
	case l.Collection != "":
		kind = "collection " + l.Collection
	case l.Exclusive:
		kind = "exclusive"
	}
	return fmt.Sprintf("%s lock for %s held by pid %d on %s since %s", kind, l.Operation, l.PID, l.Host, l.Created.Format(time.RFC3339))
}

func (l LockInfo) stale(now time.Time) bool {
	if now.Sub(l.Refreshed) > LockStaleAfter {
		return true
	}
	host, _ := os.Hostname()
	if l.Host == host && l.ProcessSpace != "" && l.ProcessSpace == processSpace() && l.PID != os.Getpid() && l.PID > 0 {
		// Signal 0 checks existence; ESRCH means the holder died.
		if err := syscall.Kill(l.PID, 0); errors.Is(err, syscall.ESRCH) {
			return true
		}
	}
	return false
}

// conflicts says whether two locks exclude each other.
func (l LockInfo) conflicts(o LockInfo) bool {
	if l.Reader || o.Reader {
		return false
	}
	if l.Collection != "" || o.Collection != "" {
		return l.Collection == o.Collection
	}
	return l.Exclusive || o.Exclusive
}

// repoLock is a held lock: its lock object, refreshed while held, the
// context of the operation it protects (cancelled with ErrLockLost when the
// lock cannot be kept), and the in-process exclusion released with it.
type repoLock struct {
	repo        *Repository
	name        string
	ctx         context.Context
	cancel      context.CancelCauseFunc
	stop        context.Context // done when the lock is released
	stopRefresh context.CancelFunc
	done        sync.WaitGroup
	once        sync.Once
	unlockLocal func()
	// The timing in force when the lock was taken (tests change the
	// package's variables between locks, never during one).
	refreshEach, staleAfter time.Duration

	mu       sync.Mutex
	info     LockInfo
	lastGood time.Time // when the lock object was last written, by the wall clock
}

// lock takes the repository's shared or exclusive lock for operation, or
// returns an error wrapping ErrLocked that names the conflicting holder.
func (r *Repository) lock(ctx context.Context, exclusive bool, operation string) (*repoLock, error) {
	return r.lockWait(ctx, exclusive, operation, 0)
}

// lockWait is lock that waits up to wait for conflicting holders, in this
// process and others, to finish. The operation must run under the returned
// lock's context (l.ctx), which ends if the lock is lost.
func (r *Repository) lockWait(ctx context.Context, exclusive bool, operation string, wait time.Duration) (*repoLock, error) {
	l, err := r.lockWaitAnyFormat(ctx, exclusive, operation, wait)
	if err != nil {
		return nil, err
	}
	if err := r.checkFormatUnchanged(ctx, operation); err != nil {
		l.unlock()
		return nil, err
	}
	return l, nil
}

// checkFormatUnchanged reads the config again, under a lock just taken, and
// fails with ErrFormatChanged if its version is no longer the one r was
// opened with: diskpoint migrate converted the repository meanwhile, and a
// writer or GC that went on with the old format's index would write index
// files the repository no longer reads, or delete the ones it does.
func (r *Repository) checkFormatUnchanged(ctx context.Context, operation string) error {
	data, err := r.store.Get(ctx, configName)
	if err != nil {
		return fmt.Errorf("%s: read config: %w", operation, err)
	}
	var stored struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(data, &stored); err != nil {
		return corrupt(configName, "%v", err)
	}
	if stored.Version != r.config.Version {
		return fmt.Errorf("%s: the repository is format version %d, it was version %d when opened: %w", operation, stored.Version, r.config.Version, ErrFormatChanged)
	}
	return nil
}

// lockWaitAnyFormat is lockWait without the format check, for migrate,
// which reads the config itself under its lock.
func (r *Repository) lockWaitAnyFormat(ctx context.Context, exclusive bool, operation string, wait time.Duration) (*repoLock, error) {
	deadline := time.Now().Add(wait)
	unlockLocal, err := r.lockLocal(ctx, exclusive, operation, wait)
	if err != nil {
		return nil, err
	}
	var l *repoLock
	err = retryLocked(ctx, time.Until(deadline), func() (err error) {
		l, err = r.takeLock(ctx, LockInfo{Exclusive: exclusive, Operation: operation})
		return err
	})
	if err != nil {
		unlockLocal()
		return nil, err
	}
	l.unlockLocal = unlockLocal
	return l, nil
}

// localLockWeight is the in-process lock's capacity: a shared holder takes
// 1, an exclusive one all of it.
const localLockWeight = 1 << 40

// lockLocal takes the in-process side of the repository lock: the lock
// objects of this process's own operations do not exclude each other (they
// are all this host and PID), so this does. It waits up to wait, and
// honours ctx; with wait 0 it fails at once with ErrLocked.
func (r *Repository) lockLocal(ctx context.Context, exclusive bool, operation string, wait time.Duration) (func(), error) {
	n := int64(1)
	if exclusive {
		n = localLockWeight
	}
	sem := r.localLock()
	busy := fmt.Errorf("repository: %s must wait for another operation in this process (a GC, or the creates a GC waits for): %w", operation, ErrLocked)
	if wait <= 0 {
		if !sem.TryAcquire(n) {
			return nil, busy
		}
	} else {
		wctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		if err := sem.Acquire(wctx, n); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, busy
		}
	}
	return func() { sem.Release(n) }, nil
}

// LockCollection takes the collection's lock for operation, so that only
// one create runs per collection at a time, in this process or any other.
// If the collection is busy it returns an error wrapping ErrLocked, or, with
// wait > 0, retries until it gets the lock or wait has passed. The returned
// function releases the lock.
func (r *Repository) LockCollection(ctx context.Context, collection, operation string, wait time.Duration) (func(), error) {
	if err := CheckName("collection", collection); err != nil {
		return nil, err
	}
	var l *repoLock
	err := retryLocked(ctx, wait, func() (err error) {
		l, err = r.tryLockCollection(ctx, collection, operation)
		return err
	})
	if err != nil {
		return nil, err
	}
	return l.unlock, nil
}

// retryLocked calls try until it does not fail with ErrLocked or wait has
// passed. Another process's lock can only be watched by polling its object.
func retryLocked(ctx context.Context, wait time.Duration, try func() error) error {
	deadline := time.Now().Add(wait)
	backoff := 20 * time.Millisecond
	for {
		err := try()
		if !errors.Is(err, ErrLocked) || time.Now().Add(backoff).After(deadline) {
			return err
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(2*backoff, time.Second)
	}
}

func (r *Repository) tryLockCollection(ctx context.Context, collection, operation string) (*repoLock, error) {
	r.busyMu.Lock()
	if r.busy[collection] != "" {
		holder := r.busy[collection]
		r.busyMu.Unlock()
		return nil, fmt.Errorf("collection %q: %s is running in this process: %w", collection, holder, ErrLocked)
	}
	if r.busy == nil {
		r.busy = map[string]string{}
	}
	r.busy[collection] = operation
	r.busyMu.Unlock()
	release := func() {
		r.busyMu.Lock()
		delete(r.busy, collection)
		r.busyMu.Unlock()
	}
	l, err := r.takeLock(ctx, LockInfo{Collection: collection, Operation: operation})
	if err != nil {
		release()
		return nil, err
	}
	l.unlockLocal = release
	return l, nil
}

// takeLock writes the lock object, checks for conflicting holders, and
// starts refreshing it. The lock's context is derived from ctx.
func (r *Repository) takeLock(ctx context.Context, info LockInfo) (*repoLock, error) {
	l := &repoLock{repo: r, info: info, unlockLocal: func() {},
		refreshEach: lockRefreshEach, staleAfter: LockStaleAfter}
	if err := l.acquire(ctx); err != nil {
		return nil, err
	}
	l.ctx, l.cancel = context.WithCancelCause(ctx)
	l.stop, l.stopRefresh = context.WithCancel(context.Background())
	l.done.Go(l.refresh)
	return l, nil
}

func (l *repoLock) acquire(ctx context.Context) error {
	var suffix [12]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return err
	}
	l.name = lockPrefix + hex.EncodeToString(suffix[:])
	host, _ := os.Hostname()
	l.info.Host, l.info.PID, l.info.ProcessSpace, l.info.Created = host, os.Getpid(), processSpace(), time.Now().UTC()
	if err := l.create(ctx); err != nil {
		if !errors.Is(err, ErrExists) {
			// The store may have written it before failing to answer.
			_ = l.removeObject(context.WithoutCancel(ctx))
		}
		return err
	}
	if l.info.Reader {
		return nil // it conflicts with nothing
	}
	// Look for conflicts. Where the store's listing is linearizable, that
	// is enough: of two takers whose lock objects appeared at the same
	// moment, the one that listed last sees the other's. Elsewhere, wait
	// for a lock written at the same moment as ours to become visible, and
	// look again.
	err := l.checkOthers(ctx)
	if err == nil && settlesLocks(l.repo.store) {
		if err = lockSettleWait(ctx, lockSettle); err == nil {
			err = l.checkOthers(ctx)
		}
	}
	if err != nil {
		_ = l.removeObject(context.WithoutCancel(ctx))
		return err
	}
	return nil
}

// checkOthers returns an error wrapping ErrLocked if a live lock conflicts
// with ours. Stale locks are removed. A lock that cannot be read, or does
// not decode, is an error: whose it is cannot be told, and it may be a live
// GC's, so it is neither ignored nor removed ('diskpoint unlock -all'
// removes it once no diskpoint runs anywhere).
func (l *repoLock) checkOthers(ctx context.Context) error {
	names, err := listNames(ctx, l.repo.store, lockPrefix)
	if err != nil {
		return fmt.Errorf("list locks: %w", err)
	}
	now := time.Now()
	for _, name := range names {
		if name == l.name {
			continue
		}
		other, err := readLock(ctx, l.repo.store, name)
		if errors.Is(err, ErrNotFound) {
			continue // released while we looked
		}
		if err != nil {
			return fmt.Errorf("lock %s cannot be read, so it may be held (if no diskpoint runs anywhere, 'diskpoint unlock -all' removes it): %w", name, err)
		}
		if other.stale(now) {
			l.repo.store.Delete(ctx, name) // its holder is gone; a failure leaves it ignored
			continue
		}
		if l.info.conflicts(other) {
			return fmt.Errorf("repository: %s: %w", other, ErrLocked)
		}
	}
	return nil
}

// write stores the lock object with the time of writing as its refresh time.
func (l *repoLock) write(ctx context.Context) error {
	l.mu.Lock()
	info := l.info
	l.mu.Unlock()
	now := time.Now()
	info.Refreshed = now.UTC()
	data, err := json.Marshal(info)
	if err != nil {
		return err
	}
	if err := l.repo.store.Put(ctx, l.name, data); err != nil {
		return fmt.Errorf("write lock %s: %w", l.name, err)
	}
	l.mu.Lock()
	l.lastGood = now.Round(0)
	l.mu.Unlock()
	return nil
}

// refresh rewrites the lock object every refreshEach. A failed refresh is
// retried sooner; once none has succeeded for staleAfter/2, the lock is
// lost: the operation's context is cancelled with ErrLockLost, well before
// another process could take the lock for stale and, say, sweep what this
// create deduplicated against.
func (l *repoLock) refresh() {
	timer := time.NewTimer(l.refreshEach)
	defer timer.Stop()
	for {
		select {
		case <-l.stop.Done():
			return
		case <-timer.C:
		}
		l.mu.Lock()
		deadline := l.lastGood.Add(l.staleAfter / 2)
		l.mu.Unlock()
		// A refresh stuck in the store ends at the deadline, or at release.
		ctx, cancel := context.WithDeadline(l.stop, deadline)
		err := l.refreshOnce(ctx)
		cancel()
		if err == nil {
			timer.Reset(l.refreshEach)
			continue
		}
		if l.stop.Err() != nil {
			return // released meanwhile
		}
		if errors.Is(err, ErrLockLost) || !time.Now().Before(deadline) {
			l.cancel(fmt.Errorf("%w: %s (%s) could not be kept: %w", ErrLockLost, l.name, l.info.Operation, err))
			return
		}
		timer.Reset(max(min(l.refreshEach/5, time.Until(deadline)), time.Millisecond))
	}
}

// refreshOnce rewrites the lock object; a reader's lock first refreshes
// the reader's index. A lock object someone removed ('unlock -all', or a
// process that took it for stale) is lost at once: the lock no longer
// protects anything.
func (l *repoLock) refreshOnce(ctx context.Context) error {
	if l.info.Reader {
		l.refreshReaderIndex(ctx)
	}
	if _, err := l.repo.store.Stat(ctx, l.name); errors.Is(err, ErrNotFound) {
		return fmt.Errorf("lock object removed by someone else: %w", ErrLockLost)
	} else if err != nil {
		return err
	}
	return l.write(ctx)
}

// stillHeld is lost, made sure of now: before an operation does what only
// a held lock allows (commits a manifest, reports damage, deletes), it
// checks that its lock object is still there and was written less than
// staleAfter/2 ago by the wall clock, rather than trust the refresher to
// have noticed. The refresher may be up to a refresh period behind, and
// Go's monotonic clock stands still while the host is suspended, when
// other hosts' wall clocks, which judge staleness, do not. A lock found
// lost is cancelled with ErrLockLost.
func (l *repoLock) stillHeld(ctx context.Context) error {
	if l == nil {
		return nil
	}
	if err := l.lost(); err != nil {
		return err
	}
	l.mu.Lock()
	age := time.Now().Round(0).Sub(l.lastGood)
	l.mu.Unlock()
	var cause error
	if age >= l.staleAfter/2 {
		cause = fmt.Errorf("%w: %s (%s) was last written %s ago, and others may take it for stale", ErrLockLost, l.name, l.info.Operation, age.Round(time.Second))
	} else if _, err := l.repo.store.Stat(ctx, l.name); errors.Is(err, ErrNotFound) {
		cause = fmt.Errorf("%w: %s (%s) was removed by someone else", ErrLockLost, l.name, l.info.Operation)
	} else if err != nil {
		return fmt.Errorf("check lock %s: %w", l.name, err)
	}
	if cause != nil {
		l.cancel(cause)
		return cause
	}
	return nil
}

// lost returns an error wrapping ErrLockLost if the lock was lost, else nil.
func (l *repoLock) lost() error {
	if l == nil {
		return nil // GC's and repair's internal writers hold no lock of their own
	}
	if cause := context.Cause(l.ctx); errors.Is(cause, ErrLockLost) {
		return cause
	}
	return nil
}

// create writes the lock object for the first time, with PutIfAbsent: a
// lock never replaces another holder's, whatever the odds of its random
// name.
func (l *repoLock) create(ctx context.Context) error {
	info := l.info
	info.Refreshed = info.Created
	data, err := json.Marshal(info)
	if err != nil {
		return err
	}
	// The refresh deadline counts from before the write: the object can be
	// no older than this once it is stored. Wall clock, not monotonic (see
	// stillHeld).
	before := time.Now().Round(0)
	if err := l.repo.store.PutIfAbsent(ctx, l.name, data); err != nil {
		return fmt.Errorf("write lock: %w", err)
	}
	l.mu.Lock()
	l.lastGood = before
	l.mu.Unlock()
	return nil
}

// unlock releases the lock. It is safe to call more than once.
func (l *repoLock) unlock() {
	_ = l.release()
}

// release is unlock that says whether the lock object could be removed
// (if not, it goes stale).
func (l *repoLock) release() error {
	var err error
	l.once.Do(func() {
		l.stopRefresh()
		l.done.Wait()
		l.cancel(context.Canceled)
		err = l.removeObject(context.Background())
		l.unlockLocal()
	})
	return err
}

// lockRemoveAttempts: a lock object left behind blocks every GC (and a
// GC's lock every create) until it goes stale, so one failed delete is
// worth trying again.
const lockRemoveAttempts = 3

// removeObject deletes the lock object; one already gone is fine.
func (l *repoLock) removeObject(ctx context.Context) error {
	var err error
	for range lockRemoveAttempts {
		if err = l.repo.store.Delete(ctx, l.name); err == nil || errors.Is(err, ErrNotFound) || ctx.Err() != nil {
			break
		}
	}
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

func readLock(ctx context.Context, store Store, name string) (LockInfo, error) {
	var info LockInfo
	data, err := store.Get(ctx, name)
	if err != nil {
		return info, err
	}
	if err := json.Unmarshal(data, &info); err != nil {
		return info, corrupt(name, "%v", err)
	}
	return info, nil
}

// Unlock removes stale locks: those not refreshed for LockStaleAfter, and
// those of processes on this host that no longer exist. With all, it
// removes every lock, live or not (like restic unlock --remove-all): only
// for when no diskpoint process runs anywhere. A lock that cannot be read is
// left in place and reported, unless all is set. It returns how many locks
// it removed.
func (r *Repository) Unlock(ctx context.Context, all bool) (int, error) {
	names, err := listNames(ctx, r.store, lockPrefix)
	if err != nil {
		return 0, fmt.Errorf("unlock: list locks: %w", err)
	}
	removed := 0
	var unreadable []error
	now := time.Now()
	for _, name := range names {
		if !all {
			info, err := readLock(ctx, r.store, name)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				if ctx.Err() != nil {
					return removed, ctx.Err()
				}
				unreadable = append(unreadable, fmt.Errorf("lock %s cannot be read and was left in place (-all removes it): %w", name, err))
				continue
			}
			if !info.stale(now) {
				continue
			}
		}
		if err := r.store.Delete(ctx, name); err != nil && !errors.Is(err, ErrNotFound) {
			return removed, fmt.Errorf("unlock: remove %s: %w", name, err)
		}
		removed++
	}
	if len(unreadable) > 0 {
		return removed, fmt.Errorf("unlock: %w", errors.Join(unreadable...))
	}
	return removed, nil
}
