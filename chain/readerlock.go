package chain

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ReaderLock is a held reader lock: what a restore, an NBD export, a diff or
// the source side of a copy holds while it reads restore points, so that a
// GC in any process keeps what it reads. It blocks nothing: creates and GCs
// run beside it. GC marks the lock's roots as live (a restore point deleted
// while it is exported stays readable until the export ends), and leaves in
// place the packs it drops while the reader may still read them through an
// index it loaded earlier (see gc.go and garbage.go). The lock, and with it
// the reader's index, is refreshed every few minutes until Close.
type ReaderLock struct {
	l *repoLock
}

// OpenReader takes a reader lock for operation on roots: the blobs the
// reader reads from (each disk's block-map root, the VM config blob). Then
// it refreshes the index, so that the reader never reads through an index
// older than its lock.
//
// The caller follows the open protocol of chain/FORMAT.md's safety model:
// read the manifest, take the lock with its roots, read the manifest again.
// If it is gone now it was deleted before the lock was visible, and a GC
// may already have swept it: the open fails. If it is still there, any GC
// either marked from it or will see the lock.
//
// The lock's context (Context) is derived from ctx; it ends with a cause
// wrapping ErrLockLost if the lock cannot be refreshed.
func (r *Repository) OpenReader(ctx context.Context, operation string, roots []ID) (*ReaderLock, error) {
	var live []ID
	for _, id := range roots {
		if !id.IsZero() {
			live = append(live, id)
		}
	}
	// The index is refreshed after the lock is written: this time is no
	// later than the view of the store the reader will read through.
	loaded := time.Now().UTC()
	l, err := r.takeLock(ctx, LockInfo{Reader: true, Operation: operation, Roots: live, IndexLoaded: loaded})
	if err != nil {
		return nil, fmt.Errorf("%s: reader lock: %w", operation, err)
	}
	if err := r.refreshIndex(ctx); err != nil {
		l.unlock()
		return nil, fmt.Errorf("%s: refresh index: %w", operation, err)
	}
	return &ReaderLock{l: l}, nil
}

// Context is done when the lock is lost (its cause then wraps ErrLockLost)
// or released. The reader's work should run under it.
func (rl *ReaderLock) Context() context.Context { return rl.l.ctx }

// Err returns an error wrapping ErrLockLost once the lock is lost, else nil.
// A reader whose lock is lost must stop: a GC may no longer keep what it
// reads.
func (rl *ReaderLock) Err() error { return rl.l.lost() }

// Refresh refreshes the index and rewrites the lock now, rather than at the
// next periodic refresh, so that a GC waiting on this reader's index to
// move past the packs it dropped need not wait.
func (rl *ReaderLock) Refresh(ctx context.Context) error {
	if err := rl.Err(); err != nil {
		return err
	}
	return rl.l.refreshOnce(ctx)
}

// Close releases the lock. It is safe to call more than once; an error
// means the lock object could not be removed (it goes stale in time).
func (rl *ReaderLock) Close() error { return rl.l.release() }

// refreshReaderIndex refreshes the index of a reader's repository and,
// if that worked, records the time it started in the lock as index_loaded.
// A failure leaves the older time, which keeps GCs more careful, not less.
func (l *repoLock) refreshReaderIndex(ctx context.Context) {
	started := time.Now().UTC()
	if err := l.repo.refreshIndex(ctx); err != nil {
		return
	}
	l.mu.Lock()
	if started.After(l.info.IndexLoaded) {
		l.info.IndexLoaded = started
	}
	l.mu.Unlock()
}

// liveReaders returns the reader locks that are not stale. A lock that
// cannot be read is an error: it may be a reader's.
func liveReaders(ctx context.Context, store Store) ([]LockInfo, error) {
	names, err := listNames(ctx, store, lockPrefix)
	if err != nil {
		return nil, fmt.Errorf("list locks: %w", err)
	}
	now := time.Now()
	var readers []LockInfo
	for _, name := range names {
		info, err := readLock(ctx, store, name)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("lock %s cannot be read, and it may be a reader's: %w", name, err)
		}
		if info.Reader && !info.stale(now) {
			readers = append(readers, info)
		}
	}
	return readers, nil
}

// markRoot calls use for the blob id, a reader's root, and, if it is a
// block-map node, everything under it. Nodes in seen were marked already
// (with their subtrees); the nodes visited are added to it.
func (r *Repository) markRoot(ctx context.Context, id ID, use func(context.Context, ID) error, seen map[ID]bool) error {
	if id.IsZero() {
		return nil
	}
	if err := use(ctx, id); err != nil {
		return err
	}
	e, _, ok, err := r.findBlob(ctx, r.index(), id)
	if err != nil {
		return fmt.Errorf("look up %s: %w", id, err)
	}
	if !ok || e.Type != TreeBlob {
		return nil // a VM config, or a blob gone already: nothing under it
	}
	return r.markNode(ctx, id, -1, use, seen)
}

// markNode marks tree node id and its subtree; level is the level it must
// have, or -1 for a root, whose level only its content says (a reader's
// lock records roots, not disk geometries).
func (r *Repository) markNode(ctx context.Context, id ID, level int, use func(context.Context, ID) error, seen map[ID]bool) error {
	if id.IsZero() || seen[id] {
		return nil
	}
	data, err := r.ReadBlob(ctx, TreeBlob, id, nil)
	if err != nil {
		return err
	}
	got, ids, err := decodeTreeNode(nil, data)
	if err != nil {
		return corrupt("tree blob "+id.String(), "%v", err)
	}
	if level >= 0 && got != level {
		return corrupt("tree blob "+id.String(), "level %d where level %d belongs", got, level)
	}
	if err := use(ctx, id); err != nil {
		return err
	}
	for _, child := range ids {
		switch {
		case child.IsZero():
		case got == 0:
			if err := use(ctx, child); err != nil {
				return err
			}
		default:
			if err := r.markNode(ctx, child, got-1, use, seen); err != nil {
				return err
			}
		}
	}
	seen[id] = true
	return nil
}
