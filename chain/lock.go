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
// process on this host that no longer exists.
var (
	LockStaleAfter  = 30 * time.Minute
	lockRefreshEach = 5 * time.Minute
)

const lockPrefix = "locks/"

// LockInfo is what a lock object records about its holder.
type LockInfo struct {
	// Collection, when set, makes this a collection lock: held by a create,
	// it conflicts only with other locks of the same collection.
	Collection string `json:"collection,omitempty"`
	// Exclusive repository locks (GC) conflict with every other repository lock.
	Exclusive bool      `json:"exclusive"`
	Operation string    `json:"operation"`
	Host      string    `json:"host"`
	PID       int       `json:"pid"`
	Created   time.Time `json:"created"`
	Refreshed time.Time `json:"refreshed"`
}

func (l LockInfo) String() string {
	kind := "shared"
	switch {
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
	if l.Host == host && l.PID != os.Getpid() && l.PID > 0 {
		// Signal 0 checks existence; ESRCH means the holder died.
		if err := syscall.Kill(l.PID, 0); errors.Is(err, syscall.ESRCH) {
			return true
		}
	}
	return false
}

// conflicts says whether two locks exclude each other.
func (l LockInfo) conflicts(o LockInfo) bool {
	if l.Collection != "" || o.Collection != "" {
		return l.Collection == o.Collection
	}
	return l.Exclusive || o.Exclusive
}

// repoLock is a held lock: its lock object, refreshed while held, and the
// in-process exclusion released with it.
type repoLock struct {
	repo        *Repository
	info        LockInfo
	name        string
	stop        chan struct{}
	done        sync.WaitGroup
	once        sync.Once
	unlockLocal func()
}

// lock takes the repository's shared or exclusive lock for operation, or
// returns an error wrapping ErrLocked that names the conflicting holder.
func (r *Repository) lock(ctx context.Context, exclusive bool, operation string) (*repoLock, error) {
	unlockLocal := r.mu.RUnlock
	if exclusive {
		r.mu.Lock()
		unlockLocal = r.mu.Unlock
	} else {
		r.mu.RLock()
	}
	return r.takeLock(ctx, LockInfo{Exclusive: exclusive, Operation: operation}, unlockLocal)
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
	return r.takeLock(ctx, LockInfo{Collection: collection, Operation: operation}, release)
}

// takeLock writes the lock object and checks for conflicting holders; on
// failure it calls unlockLocal.
func (r *Repository) takeLock(ctx context.Context, info LockInfo, unlockLocal func()) (*repoLock, error) {
	l := &repoLock{repo: r, info: info, stop: make(chan struct{}), unlockLocal: unlockLocal}
	if err := l.acquire(ctx); err != nil {
		unlockLocal()
		return nil, err
	}
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
	l.info.Host, l.info.PID, l.info.Created = host, os.Getpid(), time.Now().UTC()
	if err := l.create(ctx); err != nil {
		return err
	}
	names, err := listNames(ctx, l.repo.store, lockPrefix)
	if err != nil {
		l.repo.store.Delete(context.WithoutCancel(ctx), l.name)
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
		if err != nil || other.stale(now) {
			// An unreadable or stale lock belongs to nobody alive: clear it.
			l.repo.store.Delete(ctx, name)
			continue
		}
		if l.info.conflicts(other) {
			l.repo.store.Delete(context.WithoutCancel(ctx), l.name)
			return fmt.Errorf("repository: %s: %w", other, ErrLocked)
		}
	}
	return nil
}

func (l *repoLock) write(ctx context.Context) error {
	info := l.info
	info.Refreshed = time.Now().UTC()
	data, err := json.Marshal(info)
	if err != nil {
		return err
	}
	if err := l.repo.store.Put(ctx, l.name, data); err != nil {
		return fmt.Errorf("write lock: %w", err)
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
	if err := l.repo.store.PutIfAbsent(ctx, l.name, data); err != nil {
		return fmt.Errorf("write lock: %w", err)
	}
	return nil
}

func (l *repoLock) refresh() {
	ticker := time.NewTicker(lockRefreshEach)
	defer ticker.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-ticker.C:
			// A failed refresh is retried at the next tick; the lock only goes
			// stale after several missed ones.
			_ = l.write(context.Background())
		}
	}
}

// unlock releases the lock. It is safe to call more than once.
func (l *repoLock) unlock() {
	l.once.Do(func() {
		close(l.stop)
		l.done.Wait()
		_ = l.repo.store.Delete(context.Background(), l.name)
		l.unlockLocal()
	})
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
