package chain_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/chain/storetest"
)

func TestLocalStoreConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) chain.Store {
		s, err := chain.NewLocalStore(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestMemStoreConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) chain.Store { return chain.NewMemStore() })
}

// A FaultStore with no faults is the store it wraps.
func TestFaultStoreConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) chain.Store {
		s, err := chain.NewLocalStore(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return storetest.NewFaultStore(s, 1)
	})
}

// A RetryStore keeps the contract over a store that fails a quarter of its
// calls transiently, some of them after doing the work: the retries hide
// every one of those failures, and the ambiguous PutIfAbsent is settled.
func TestRetryStoreConformance(t *testing.T) {
	var stores []*storetest.FaultStore
	storetest.Run(t, func(t *testing.T) chain.Store {
		faulty := storetest.NewFaultStore(chain.NewMemStore(), uint64(len(stores)))
		faulty.Inject(storetest.Fault{Chance: 0.1, Err: errFlaky, After: true})
		faulty.Inject(storetest.Fault{Chance: 0.15, Err: errFlaky})
		stores = append(stores, faulty)
		return chain.NewRetryStore(faulty, chain.RetryOptions{MaxAttempts: 50, BaseDelay: time.Microsecond, MaxDelay: 10 * time.Microsecond})
	})
	hits := 0
	for _, s := range stores {
		hits += s.Hits()
	}
	if hits < 50 {
		t.Errorf("only %d faults were injected", hits)
	}
	t.Logf("%d transient faults hidden by retries", hits)
}

// errFlaky is a transient failure, as a remote store would report a 503.
var errFlaky = fmt.Errorf("503 service unavailable: %w", chain.ErrTransient)

func TestLocalStorePermissionsAndTemp(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	s, err := chain.NewLocalStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "packs/ab/abc", []byte("x")); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{
		dir:                                   0o700,
		filepath.Join(dir, "packs"):           0o700,
		filepath.Join(dir, "packs", "ab"):     0o700,
		filepath.Join(dir, "packs/ab", "abc"): 0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", path, got, want)
		}
	}
	// A temporary file left by an interrupted Put is invisible, and removed
	// once its writer is gone: here an unknown host's file from long ago.
	leftover := filepath.Join(dir, "packs", "ab", ".tmp-ffffffff-123-456")
	if err := os.WriteFile(leftover, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(leftover, old, old)
	// A live writer's file (this process's) stays.
	live := filepath.Join(dir, "packs", "ab", fmt.Sprintf(".tmp-%s-%d-789", chain.HostTag(), os.Getpid()))
	if err := os.WriteFile(live, []byte("in flight"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := s.List(ctx, "", func(chain.ObjectInfo) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("List saw %d objects, want 1 (temp file hidden)", n)
	}
	removed, err := s.RemoveTemp(ctx)
	if err != nil || removed != 1 {
		t.Fatalf("RemoveTemp = %d, %v; want 1", removed, err)
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Errorf("temp file still there: %v", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("a live writer's temp file was removed: %v", err)
	}
}

// Objects that must never be replaced are created with PutIfAbsent: of
// several processes that init one store, or commit a restore point of the
// same name, at the same moment, exactly one succeeds. Every write of the
// object is held until all of them are under way, so a check-then-put
// would let them all through.
func TestConfigAndManifestsAreCreatedOnce(t *testing.T) {
	ctx := context.Background()
	const n = 4
	race := func(t *testing.T, store *storetest.FaultStore, object string, create func(i int) error) {
		t.Helper()
		entered, release := make(chan struct{}), make(chan struct{})
		for _, op := range []storetest.Op{storetest.OpPut, storetest.OpPutIfAbsent} {
			store.Inject(storetest.Fault{Op: op, Prefix: object, Times: n, Entered: entered, Wait: release})
		}
		errs := make(chan error, n)
		for i := range n {
			go func() { errs <- create(i) }()
		}
		for range n {
			<-entered
		}
		close(release)
		won := 0
		for range n {
			err := <-errs
			switch {
			case err == nil:
				won++
			case !errors.Is(err, chain.ErrExists):
				t.Errorf("a losing create: %v, want ErrExists", err)
			}
		}
		if won != 1 {
			t.Errorf("%d creates of %s succeeded, want 1", won, object)
		}
		store.Clear()
	}

	store := storetest.NewFaultStore(chain.NewMemStore(), 1)
	cfg, err := chain.NewConfig(0)
	if err != nil {
		t.Fatal(err)
	}
	key := func(i int) []byte { return bytes.Repeat([]byte{byte(i + 1)}, chain.KeySize) }
	race(t, store, "config", func(i int) error {
		_, err := chain.Init(ctx, store, cfg, key(i))
		return err
	})
	// The config is the winner's: exactly one of the keys opens it.
	var repos []*chain.Repository
	for i := range n {
		if repo, err := chain.Open(ctx, store, key(i)); err == nil {
			repos = append(repos, repo)
		}
	}
	if len(repos) != 1 {
		t.Fatalf("%d keys open the repository, want 1", len(repos))
	}

	// Restore points: n writers (as n processes would) commit "vm/p1".
	var writers []*chain.Writer
	for range n {
		w, err := repos[0].NewWriter(ctx, "test")
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		writers = append(writers, w)
	}
	var manifests []*chain.Manifest
	for i, w := range writers {
		m := manifest("vm", "p1", writeMap(t, w, "disk", chain.DefaultBlockSize, []chain.ID{{}}, nil))
		m.FreezeMillis = int64(i) // each writer's manifest differs
		manifests = append(manifests, m)
	}
	race(t, store, "manifests/vm/p1", func(i int) error {
		return writers[i].SaveManifest(ctx, manifests[i])
	})
}

// A lock object is created with PutIfAbsent, never with Put, which could
// replace another holder's lock.
func TestLocksAreCreatedNotReplaced(t *testing.T) {
	ctx := context.Background()
	store := storetest.NewFaultStore(chain.NewMemStore(), 1)
	cfg, _ := chain.NewTestConfig(0)
	repo, err := chain.Init(ctx, store, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	store.Inject(storetest.Fault{Op: storetest.OpPut, Prefix: "locks/", Err: errors.New("a lock must not be written with Put")})
	before := store.Calls(storetest.OpPutIfAbsent)
	w, err := repo.NewWriter(ctx, "test")
	if err != nil {
		t.Fatalf("NewWriter: %v", err)
	}
	w.Close()
	if n := store.Calls(storetest.OpPutIfAbsent) - before; n != 1 {
		t.Errorf("%d PutIfAbsent calls, want 1 (the lock)", n)
	}
}

// GC clears a crashed writer's temp files through store decorators too: a
// LocalStore wrapped in a RetryStore still gets its RemoveTemp called.
func TestGCRemovesTempFilesThroughDecorators(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	local, err := chain.NewLocalStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	repo := newRepoOn(t, chain.NewRetryStore(local, chain.RetryOptions{}))
	if err := os.MkdirAll(filepath.Join(dir, "packs", "ab"), 0o700); err != nil {
		t.Fatal(err)
	}
	leftover := filepath.Join(dir, "packs", "ab", ".tmp-ffffffff-123-456")
	if err := os.WriteFile(leftover, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(leftover, old, old)
	report, err := repo.GC(ctx, chain.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if report.TempFiles != 1 {
		t.Errorf("GC removed %d temp files, want 1", report.TempFiles)
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Errorf("temp file still there: %v", err)
	}
}
