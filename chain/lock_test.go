package chain_test

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
)

// newRepoOn makes a repository like newRepo's in store.
func newRepoOn(t *testing.T, store chain.Store) *chain.Repository {
	t.Helper()
	cfg, err := chain.NewTestConfig(0)
	if err != nil {
		t.Fatal(err)
	}
	cfg.TreeFanout = 4
	cfg.PackSize = 1 << 20
	repo, err := chain.Init(context.Background(), store, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return repo
}

// plantLock writes a lock object as another process would.
func plantLock(t *testing.T, store chain.Store, name string, info chain.LockInfo) {
	t.Helper()
	data, _ := json.Marshal(info)
	if err := store.Put(context.Background(), "locks/"+name, data); err != nil {
		t.Fatal(err)
	}
}

// liveLock is a lock a running process elsewhere on this host holds.
func liveLock(operation string, exclusive bool) chain.LockInfo {
	host, _ := os.Hostname()
	return chain.LockInfo{Exclusive: exclusive, Operation: operation, Host: host, PID: os.Getppid(), ProcessSpace: chain.ProcessSpace(), Created: time.Now(), Refreshed: time.Now()}
}

func lockNames(t *testing.T, store chain.Store) []string {
	t.Helper()
	var names []string
	store.List(context.Background(), "locks/", func(i chain.ObjectInfo) error {
		names = append(names, i.Name)
		return nil
	})
	sort.Strings(names)
	return names
}

// lockPutsFail is a store that can no longer write locks once armed: a
// process cut off from its repository, or stalled, while it works.
type lockPutsFail struct {
	chain.Store
	armed atomic.Bool
}

func (s *lockPutsFail) Put(ctx context.Context, name string, data []byte) error {
	if strings.HasPrefix(name, "locks/") && s.armed.Load() {
		return errors.New("injected: the store is unreachable")
	}
	return s.Store.Put(ctx, name, data)
}

// A writer whose lock cannot be refreshed gives up before the lock could
// be taken for stale: its context ends with ErrLockLost, and it refuses to
// commit a manifest (a GC elsewhere may have swept what it deduplicated
// against).
func TestLockLostStopsTheWriter(t *testing.T) {
	const staleAfter = 2 * time.Second
	defer chain.SetLockTiming(20*time.Millisecond, staleAfter, time.Millisecond)()
	ctx := context.Background()
	store := &lockPutsFail{Store: chain.NewMemStore()}
	repo := newRepoOn(t, store)
	w, err := repo.NewWriter(ctx, "create")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	taken := time.Now()
	ids, data := randomBlocks(rand.New(rand.NewPCG(1, 2)), 8, 0)
	d := writeMap(t, w, "disk", int64(len(ids))*chain.DefaultBlockSize, ids, data)
	store.armed.Store(true)
	select {
	case <-w.Context().Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the writer's context was not cancelled although its lock cannot be refreshed")
	}
	if since := time.Since(taken); since >= staleAfter {
		t.Errorf("lock given up %v after its last refresh: others may have taken it for stale already (after %v)", since, staleAfter)
	}
	if cause := context.Cause(w.Context()); !errors.Is(cause, chain.ErrLockLost) {
		t.Fatalf("writer context ended with %v, want ErrLockLost", cause)
	}
	m := manifest("vm", "p1", d)
	if err := w.SaveManifest(ctx, m); !errors.Is(err, chain.ErrLockLost) {
		t.Fatalf("SaveManifest after the lock was lost: %v, want ErrLockLost", err)
	}
	if _, err := store.Stat(ctx, "manifests/vm/p1"); !errors.Is(err, chain.ErrNotFound) {
		t.Fatalf("a manifest was committed without a lock: %v", err)
	}
}

// manifestsBlock is a store whose manifest reads hang until the caller's
// context ends: a GC stalled in its mark phase.
type manifestsBlock struct {
	lockPutsFail
	blocking atomic.Bool
	reached  chan struct{}
	once     sync.Once
}

func (s *manifestsBlock) Get(ctx context.Context, name string) ([]byte, error) {
	if strings.HasPrefix(name, "manifests/") && s.blocking.Load() {
		s.once.Do(func() { close(s.reached) })
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return s.Store.Get(ctx, name)
}

// A GC whose lock cannot be refreshed stops with ErrLockLost and removes
// nothing.
func TestLockLostStopsGC(t *testing.T) {
	defer chain.SetLockTiming(20*time.Millisecond, time.Second, time.Millisecond)()
	ctx := context.Background()
	store := &manifestsBlock{lockPutsFail: lockPutsFail{Store: chain.NewMemStore()}, reached: make(chan struct{})}
	repo := newRepoOn(t, store)
	ids, data := randomBlocks(rand.New(rand.NewPCG(2, 2)), 50, 0)
	commit(t, repo, "p1", ids, data)
	commit(t, repo, "p2", ids[:10], data)
	if err := repo.DeleteManifest(ctx, "vm", "p1"); err != nil {
		t.Fatal(err)
	}
	before := storedBytes(t, store, "")
	go func() {
		<-store.reached // the GC holds its lock and is marking
		store.armed.Store(true)
	}()
	store.blocking.Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := repo.GC(ctx, chain.GCOptions{RepackUnused: 0.01})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, chain.ErrLockLost) {
			t.Fatalf("GC that lost its lock: %v, want ErrLockLost", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("GC went on although its lock could not be refreshed")
	}
	if after := storedBytes(t, store, ""); after != before {
		t.Errorf("GC that lost its lock changed the store: %d -> %d bytes", before, after)
	}
}

// lockUnreadable is a store where one lock object cannot be read
// (permissions, say), and stays that way.
type lockUnreadable struct {
	chain.Store
	name string
}

func (s *lockUnreadable) Get(ctx context.Context, name string) ([]byte, error) {
	if name == s.name {
		return nil, os.ErrPermission
	}
	return s.Store.Get(ctx, name)
}

// A lock that cannot be read, or does not decode, may be a live GC's: it is
// an error naming it, and it is left in place.
func TestUnreadableLockIsAnError(t *testing.T) {
	ctx := context.Background()
	store := &lockUnreadable{Store: chain.NewMemStore(), name: "locks/unreadable"}
	repo := newRepoOn(t, store)
	plantLock(t, store, "unreadable", liveLock("gc", true))
	if w, err := repo.NewWriter(ctx, "create"); err == nil || !strings.Contains(err.Error(), "locks/unreadable") || !errors.Is(err, os.ErrPermission) {
		if w != nil {
			w.Close()
		}
		t.Fatalf("writer beside an unreadable lock: %v, want an error naming it", err)
	}
	if _, err := repo.GC(ctx, chain.GCOptions{}); err == nil || !strings.Contains(err.Error(), "locks/unreadable") {
		t.Fatalf("GC beside an unreadable lock: %v, want an error naming it", err)
	}
	if _, err := store.Stat(ctx, "locks/unreadable"); err != nil {
		t.Fatalf("the unreadable lock was removed: %v", err)
	}

	store.name = ""
	store.Delete(ctx, "locks/unreadable")
	if err := store.Put(ctx, "locks/garbled", []byte(`{"exclusive": tr`)); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.GC(ctx, chain.GCOptions{}); !errors.Is(err, chain.ErrCorrupt) || !strings.Contains(err.Error(), "locks/garbled") {
		t.Fatalf("GC beside a lock that does not decode: %v, want ErrCorrupt naming it", err)
	}
	if _, err := store.Stat(ctx, "locks/garbled"); err != nil {
		t.Fatalf("the garbled lock was removed: %v", err)
	}
}

// lockRace is a store where another process writes a conflicting lock at
// the same moment as ours: it becomes visible just after our first look.
type lockRace struct {
	chain.Store
	lists atomic.Int32
	rival []byte
}

func (s *lockRace) List(ctx context.Context, prefix string, fn func(chain.ObjectInfo) error) error {
	err := s.Store.List(ctx, prefix, fn)
	if prefix == "locks/" && s.lists.Add(1) == 1 {
		s.Store.Put(ctx, "locks/rival", s.rival)
	}
	return err
}

// After writing its lock and finding no conflict, a taker waits and looks
// again, so that a rival lock written at the same moment is not missed.
func TestLockSettlesAndChecksAgain(t *testing.T) {
	ctx := context.Background()
	rival, _ := json.Marshal(liveLock("create", false))
	store := &lockRace{Store: chain.NewMemStore(), rival: rival}
	repo := newRepoOn(t, store)
	if _, err := repo.GC(ctx, chain.GCOptions{}); !errors.Is(err, chain.ErrLocked) || !strings.Contains(err.Error(), "create") {
		t.Fatalf("GC racing a create's lock: %v, want ErrLocked naming the create", err)
	}
}

// The in-process lock honours the wait and the context: a GC beside a
// writer in the same process fails with ErrLocked after LockWait instead of
// blocking until the writer ends.
func TestInProcessLockHonoursWaitAndContext(t *testing.T) {
	ctx := context.Background()
	repo := newRepo(t)
	w, err := repo.NewWriter(ctx, "create")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	gc := func(ctx context.Context, wait time.Duration) (time.Duration, error) {
		done := make(chan error, 1)
		start := time.Now()
		go func() {
			_, err := repo.GC(ctx, chain.GCOptions{LockWait: wait})
			done <- err
		}()
		select {
		case err := <-done:
			return time.Since(start), err
		case <-time.After(20 * time.Second):
			t.Fatalf("GC with LockWait %v beside a writer of this process is still waiting", wait)
			return 0, nil
		}
	}
	const wait = 100 * time.Millisecond
	took, err := gc(ctx, wait)
	if !errors.Is(err, chain.ErrLocked) {
		t.Fatalf("GC beside a writer: %v, want ErrLocked", err)
	}
	if took < wait {
		t.Errorf("GC gave up after %v, before its LockWait of %v", took, wait)
	}
	if _, err := gc(ctx, 0); !errors.Is(err, chain.ErrLocked) {
		t.Fatalf("GC without LockWait beside a writer: %v, want ErrLocked", err)
	}
	short, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if _, err := gc(short, time.Hour); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GC whose context ends while it waits: %v, want the context's error", err)
	}
	w.Close()
	if _, err := gc(ctx, 0); err != nil {
		t.Fatalf("GC once the writer closed: %v", err)
	}
}

// Unlock removes stale locks only, and leaves live and unreadable ones;
// with all it removes every lock.
func TestUnlock(t *testing.T) {
	ctx := context.Background()
	repo := newRepo(t)
	store := repo.Store()
	host, _ := os.Hostname()
	long := time.Now().Add(-2 * chain.LockStaleAfter)
	plantLock(t, store, "dead", chain.LockInfo{Operation: "create", Host: host, PID: 1 << 30, ProcessSpace: chain.ProcessSpace(), Created: time.Now(), Refreshed: time.Now()})
	plantLock(t, store, "old", chain.LockInfo{Operation: "gc", Exclusive: true, Host: "elsewhere", PID: 1, Created: long, Refreshed: long})
	plantLock(t, store, "live", liveLock("create", false))
	if err := store.Put(ctx, "locks/garbled", []byte("{")); err != nil {
		t.Fatal(err)
	}
	removed, err := repo.Unlock(ctx, false)
	if removed != 2 || !errors.Is(err, chain.ErrCorrupt) || !strings.Contains(err.Error(), "locks/garbled") {
		t.Fatalf("unlock: removed %d, %v; want 2 and an error naming locks/garbled", removed, err)
	}
	if got := strings.Join(lockNames(t, store), " "); got != "locks/garbled locks/live" {
		t.Fatalf("locks after unlock: %s, want the garbled and the live one", got)
	}
	if removed, err := repo.Unlock(ctx, true); removed != 2 || err != nil {
		t.Fatalf("unlock all: removed %d, %v; want 2", removed, err)
	}
	if names := lockNames(t, store); len(names) != 0 {
		t.Fatalf("locks after unlock all: %v", names)
	}
}

// A reader whose lock cannot be refreshed is told to stop: GCs may no
// longer keep what it reads.
func TestReaderLockLost(t *testing.T) {
	defer chain.SetLockTiming(20*time.Millisecond, time.Second, time.Millisecond)()
	ctx := context.Background()
	store := &lockPutsFail{Store: chain.NewMemStore()}
	repo := newRepoOn(t, store)
	lock, err := repo.OpenReader(ctx, "export", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	store.armed.Store(true)
	select {
	case <-lock.Context().Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the reader's context was not cancelled although its lock cannot be refreshed")
	}
	if err := lock.Err(); !errors.Is(err, chain.ErrLockLost) {
		t.Fatalf("reader lock: %v, want ErrLockLost", err)
	}
}

// lockWriteCounter counts the writes of lock objects: each one after the
// first is a refresh.
type lockWriteCounter struct {
	chain.Store
	mu     sync.Mutex
	writes map[string]int
	cond   *sync.Cond
}

func newLockWriteCounter(s chain.Store) *lockWriteCounter {
	c := &lockWriteCounter{Store: s, writes: map[string]int{}}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *lockWriteCounter) count(name string) {
	if strings.HasPrefix(name, "locks/") {
		c.mu.Lock()
		c.writes[name]++
		c.cond.Broadcast()
		c.mu.Unlock()
	}
}

func (c *lockWriteCounter) Put(ctx context.Context, name string, data []byte) error {
	err := c.Store.Put(ctx, name, data)
	if err == nil {
		c.count(name)
	}
	return err
}

func (c *lockWriteCounter) PutIfAbsent(ctx context.Context, name string, data []byte) error {
	err := c.Store.PutIfAbsent(ctx, name, data)
	if err == nil {
		c.count(name)
	}
	return err
}

// waitEachWritten waits until n lock objects have each been written at
// least times times, or until one of the lock contexts ends (a lost lock is
// no longer refreshed).
func (c *lockWriteCounter) waitEachWritten(n, times int, locks ...context.Context) {
	for _, ctx := range locks {
		defer context.AfterFunc(ctx, func() {
			c.mu.Lock()
			c.cond.Broadcast()
			c.mu.Unlock()
		})()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		for _, ctx := range locks {
			if ctx.Err() != nil {
				return
			}
		}
		ok := 0
		for _, w := range c.writes {
			if w >= times {
				ok++
			}
		}
		if ok >= n {
			return
		}
		c.cond.Wait()
	}
}

// A healthy lock on a store that works is kept through its refreshes: a
// writer's and a reader's lock, each refreshed three times, are not lost.
// (Once, the first refresh measured its deadline from a zero time, so every
// operation longer than one refresh period failed with ErrLockLost.)
func TestHealthyLockSurvivesRefreshes(t *testing.T) {
	defer chain.SetLockTiming(20*time.Millisecond, 10*time.Second, time.Millisecond)()
	ctx := context.Background()
	store := newLockWriteCounter(chain.NewMemStore())
	repo := newRepoOn(t, store)
	w, err := repo.NewWriter(ctx, "create")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, err := repo.OpenReader(ctx, "restore", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	store.waitEachWritten(2, 4, w.Context(), r.Context()) // created, then refreshed three times
	if err := w.Context().Err(); err != nil {
		t.Errorf("writer lost its lock on a healthy store: %v", context.Cause(w.Context()))
	}
	if err := r.Err(); err != nil {
		t.Errorf("reader lost its lock on a healthy store: %v", err)
	}
}

// A writer whose lock was last written more than half the stale time ago
// commits nothing, even when its refresher has not noticed yet (here it
// would refresh in an hour): the commit checks its lock by the wall clock
// first. Time must pass for that, so this test waits for the lock to age.
func TestCommitChecksTheLocksAgeItself(t *testing.T) {
	defer chain.SetLockTiming(time.Hour, 200*time.Millisecond, time.Millisecond)()
	ctx := context.Background()
	repo := newRepo(t)
	ids, data := randomBlocks(rand.New(rand.NewPCG(5, 5)), 8, 0)
	w, err := repo.NewWriter(ctx, "create")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	d := writeMap(t, w, "disk", int64(len(ids))*chain.DefaultBlockSize, ids, data)
	time.Sleep(150 * time.Millisecond) // the lock ages past half the stale time
	err = w.SaveManifest(ctx, manifest("vm", "p1", d))
	if !errors.Is(err, chain.ErrLockLost) {
		t.Fatalf("commit with a lock last written 150ms ago (stale after 200ms): %v; want ErrLockLost", err)
	}
	if _, err := repo.LoadManifest(ctx, "vm", "p1"); !errors.Is(err, chain.ErrNotFound) {
		t.Errorf("the point was committed anyway: %v", err)
	}
}
