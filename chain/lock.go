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
	Exclusive bool      `json:"exclusive"`
	Operation string    `json:"operation"`
	Host      string    `json:"host"`
	PID       int       `json:"pid"`
	Created   time.Time `json:"created"`
	Refreshed time.Time `json:"refreshed"`
}

func (l LockInfo) String() string {
	kind := "shared"
	if l.Exclusive {
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

// repoLock is a held lock: the in-process RWMutex and the lock object.
type repoLock struct {
	repo      *Repository
	exclusive bool
	name      string
	created   time.Time
	stop      chan struct{}
	done      sync.WaitGroup
	once      sync.Once
}

// lock takes the repository's shared or exclusive lock for operation, or
// returns an error wrapping ErrLocked that names the conflicting holder.
func (r *Repository) lock(ctx context.Context, exclusive bool, operation string) (*repoLock, error) {
	if exclusive {
		r.mu.Lock()
	} else {
		r.mu.RLock()
	}
	l := &repoLock{repo: r, exclusive: exclusive, stop: make(chan struct{})}
	if err := l.acquire(ctx, operation); err != nil {
		l.unlockLocal()
		return nil, err
	}
	l.done.Go(func() { l.refresh(operation) })
	return l, nil
}

func (l *repoLock) unlockLocal() {
	if l.exclusive {
		l.repo.mu.Unlock()
	} else {
		l.repo.mu.RUnlock()
	}
}

func (l *repoLock) acquire(ctx context.Context, operation string) error {
	var suffix [12]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return err
	}
	l.name = lockPrefix + hex.EncodeToString(suffix[:])
	l.created = time.Now()
	if err := l.write(ctx, operation); err != nil {
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
		if l.exclusive || other.Exclusive {
			l.repo.store.Delete(context.WithoutCancel(ctx), l.name)
			return fmt.Errorf("repository: %s: %w", other, ErrLocked)
		}
	}
	return nil
}

func (l *repoLock) write(ctx context.Context, operation string) error {
	host, _ := os.Hostname()
	data, err := json.Marshal(LockInfo{
		Exclusive: l.exclusive, Operation: operation, Host: host, PID: os.Getpid(),
		Created: l.created.UTC(), Refreshed: time.Now().UTC(),
	})
	if err != nil {
		return err
	}
	if err := l.repo.store.Put(ctx, l.name, data); err != nil {
		return fmt.Errorf("write lock: %w", err)
	}
	return nil
}

func (l *repoLock) refresh(operation string) {
	ticker := time.NewTicker(lockRefreshEach)
	defer ticker.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-ticker.C:
			// A failed refresh is retried at the next tick; the lock only goes
			// stale after several missed ones.
			_ = l.write(context.Background(), operation)
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
