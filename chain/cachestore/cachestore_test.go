package cachestore_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/chain/cachestore"
	"github.com/diskpoint/diskpoint/chain/storetest"
	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

func keepAll(context.Context, string) bool { return true }

// The caching store keeps the Store contract, keeping every object (so
// that the suite's reads and writes go through the cache) or only the
// metadata, around a MemStore and a LocalStore.
func TestConformance(t *testing.T) {
	for _, tc := range []struct {
		name  string
		inner func(t *testing.T) chain.Store
	}{
		{"MemStore", func(t *testing.T) chain.Store { return chain.NewMemStore() }},
		{"LocalStore", func(t *testing.T) chain.Store {
			s, err := chain.NewLocalStore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return s
		}},
	} {
		for _, keep := range []struct {
			name string
			fn   func(context.Context, string) bool
		}{{"all", keepAll}, {"metadata", nil}} {
			t.Run(tc.name+"/"+keep.name, func(t *testing.T) {
				storetest.Run(t, func(t *testing.T) chain.Store {
					s, err := cachestore.New(tc.inner(t), cachestore.Options{Dir: t.TempDir(), Keep: keep.fn})
					if err != nil {
						t.Fatal(err)
					}
					return s
				})
			})
		}
	}
}

// countingStore counts the bytes read from the store it wraps, by the
// first element of the object's name.
type countingStore struct {
	chain.Store
	mu    sync.Mutex
	bytes map[string]int64
}

func newCounting(s chain.Store) *countingStore {
	return &countingStore{Store: s, bytes: map[string]int64{}}
}

func (c *countingStore) count(name string, n int) {
	c.mu.Lock()
	kind, _, _ := strings.Cut(name, "/")
	c.bytes[kind] += int64(n)
	c.mu.Unlock()
}

func (c *countingStore) Get(ctx context.Context, name string) ([]byte, error) {
	data, err := c.Store.Get(ctx, name)
	c.count(name, len(data))
	return data, err
}

func (c *countingStore) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	c.count(name, len(p))
	return c.Store.ReadAt(ctx, name, p, off)
}

func (c *countingStore) reset() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	got := c.bytes
	c.bytes = map[string]int64{}
	return got
}

func total(m map[string]int64) (n int64) {
	for _, v := range m {
		n += v
	}
	return n
}

// create opens the repository in store, takes a restore point of img
// into collection vm and closes it.
func create(t *testing.T, store chain.Store, img string) {
	t.Helper()
	createWithKey(t, store, img, nil)
}

// createWithKey is create for a repository encrypted with key (nil: none).
func createWithKey(t *testing.T, store chain.Store, img string, key []byte) {
	t.Helper()
	ctx := context.Background()
	repo, err := snapshot.OpenStore(ctx, store, key)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	vm, err := repo.Collection("vm")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "os", Path: img}}}); err != nil {
		t.Fatal(err)
	}
}

// An incremental create through a warm cache downloads no index file and
// no tree pack, and less in all than the same create without a cache.
func TestIncrementalCreateDownloadsLess(t *testing.T) {
	key, err := chain.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		format int
		key    []byte
	}{{"format1", chain.FormatVersion, nil}, {"format2", chain.FormatVersion2, nil}, {"format2-encrypted", chain.FormatVersion2, key}} {
		format := tc.format
		create := func(t *testing.T, store chain.Store, img string) { createWithKey(t, store, img, tc.key) }
		t.Run(tc.name, func(t *testing.T) {
			if testing.Short() && tc.key == nil {
				t.Skip("-short: the encrypted format 2 case covers the plain ones' paths")
			}
			ctx := context.Background()
			img := filepath.Join(t.TempDir(), "disk.img")
			if err := demodisk.Create(img, 4<<20, 11, demodisk.MixedImage); err != nil {
				t.Fatal(err)
			}
			remote := chain.NewMemStore()
			counted := newCounting(remote)
			dir := t.TempDir()
			cached := func() *cachestore.Store {
				s, err := cachestore.New(chainNopClose{counted}, cachestore.Options{Dir: dir})
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
			repo, err := snapshot.InitStore(ctx, remote, snapshot.InitOptions{Format: format, BlockSize: 16 << 10, Key: tc.key})
			if err != nil {
				t.Fatal(err)
			}
			repo.Close()
			create(t, cached(), img)
			if _, err := demodisk.Scatter(img, 0.01, 12); err != nil {
				t.Fatal(err)
			}
			// The same create, without a cache, on a copy.
			uncached := newCounting(storetest.Clone(t, remote))
			create(t, uncached, img)
			counted.reset()
			warm := cached()
			create(t, warm, img)
			withCache, without := counted.reset(), uncached.reset()
			t.Logf("downloaded with a warm cache %v, without %v; cache %+v", withCache, without, warm.Stats())
			for _, kind := range []string{"index", "packs"} {
				if withCache[kind] != 0 || without[kind] == 0 {
					t.Errorf("%s bytes downloaded: %d with a warm cache, %d without; want 0 and some", kind, withCache[kind], without[kind])
				}
			}
			if total(withCache) >= total(without) || warm.Stats().Hits == 0 {
				t.Errorf("downloaded %d bytes with a warm cache, %d without; want fewer", total(withCache), total(without))
			}
		})
	}
}

// chainNopClose keeps a store open when the repository using it closes,
// so that the test can reuse it.
type chainNopClose struct{ chain.Store }

func (chainNopClose) Close() error { return nil }

// A cache file that was damaged is detected when used, deleted, and the
// object fetched again from the store: the caller gets the right bytes.
func TestDamagedCacheFileIsRefetched(t *testing.T) {
	ctx := context.Background()
	s, remote, dir, data := newThreeSegmentCase(t)
	if err := s.Put(ctx, "index/aa", data); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "objects", "index", "aa")
	for i, damage := range []func([]byte) []byte{
		func(b []byte) []byte { b[len(b)-1] ^= 1; return b }, // a flipped bit in the last segment
		func(b []byte) []byte { return b[:len(b)-100] },      // truncated
		func(b []byte) []byte { b[20] ^= 0x80; return b },    // a checksum
		func(b []byte) []byte { copy(b, "XXXX"); return b },  // the magic
		func(b []byte) []byte { b[8] ^= 1; return b },        // the length
		func(b []byte) []byte { return append(b, 0) },        // a byte too many
	} {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("damage %d: the cache file: %v", i, err)
		}
		if err := os.WriteFile(file, damage(raw), 0o600); err != nil {
			t.Fatal(err)
		}
		remote.reset()
		before := s.Stats().Damaged
		var got []byte
		if i%2 == 0 {
			got, err = s.Get(ctx, "index/aa")
		} else {
			got = make([]byte, 1000)
			err = s.ReadAt(ctx, "index/aa", got, int64(len(data))-1000)
			data := data[len(data)-1000:]
			if err == nil && !bytes.Equal(got, data) {
				t.Fatalf("damage %d: ReadAt served wrong bytes", i)
			}
			got = nil
		}
		if err != nil {
			t.Fatalf("damage %d: %v", i, err)
		}
		if got != nil && !bytes.Equal(got, data) {
			t.Fatalf("damage %d: Get served wrong bytes", i)
		}
		if s.Stats().Damaged != before+1 || remote.reset()["index"] != int64(len(data)) {
			t.Fatalf("damage %d: stats %+v; want the damage seen and the object fetched again", i, s.Stats())
		}
	}
	// Healed: the next read is served from the cache.
	remote.reset()
	if got, err := s.Get(ctx, "index/aa"); err != nil || !bytes.Equal(got, data) || total(remote.reset()) != 0 {
		t.Fatalf("after healing: %v, or it was fetched again", err)
	}
}

// The cache stays within its bound, deleting the least recently used.
func TestCacheIsBounded(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	remote := chain.NewMemStore()
	const objSize = 100 << 10
	s, err := cachestore.New(remote, cachestore.Options{Dir: dir, MaxBytes: 5 * (objSize + 200)})
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"index/00", "index/01", "index/02", "index/03", "index/04", "index/05", "index/06", "index/07"}
	for i, name := range names {
		if err := s.Put(ctx, name, bytes.Repeat([]byte{byte(i)}, objSize)); err != nil {
			t.Fatal(err)
		}
		if i >= 1 {
			// index/00 is read after each write: it stays the most recent.
			if _, err := s.Get(ctx, "index/00"); err != nil {
				t.Fatal(err)
			}
		}
	}
	var size int64
	kept := map[string]bool{}
	filepath.Walk(filepath.Join(dir, "objects"), func(path string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			size += info.Size()
			kept["index/"+filepath.Base(path)] = true
		}
		return nil
	})
	if size > 5*(objSize+200) || s.Stats().Evicted == 0 {
		t.Fatalf("cache holds %d bytes after %d evictions; bound %d", size, s.Stats().Evicted, 5*(objSize+200))
	}
	if !kept["index/00"] || !kept["index/07"] || kept["index/01"] {
		t.Fatalf("kept %v; want the most recently used (index/00, index/07), not index/01", kept)
	}
	// A new Store over the directory knows what it holds, and its bound.
	s2, err := cachestore.New(remote, cachestore.Options{Dir: dir, MaxBytes: 2 * (objSize + 200)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Put(ctx, "index/08", bytes.Repeat([]byte{8}, objSize)); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "objects", "index"))
	if len(entries) > 2 {
		t.Fatalf("a reopened cache with a bound of 2 objects holds %d", len(entries))
	}
}

// Objects deleted from the store by someone else (a GC on another host)
// are not served from the cache as if present once a listing shows them
// gone, and a GC through another client leaves a repository that reads
// whole through the cache.
func TestDeletedObjectsAreNotResurrected(t *testing.T) {
	ctx := context.Background()
	remote := chain.NewMemStore()
	s, err := cachestore.New(chainNopClose{remote}, cachestore.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "index/gone", []byte("old index")); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "index/kept", []byte("live index")); err != nil {
		t.Fatal(err)
	}
	if err := remote.Delete(ctx, "index/gone"); err != nil {
		t.Fatal(err)
	}
	var listed []string
	if err := s.List(ctx, "index/", func(info chain.ObjectInfo) error { listed = append(listed, info.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || listed[0] != "index/kept" {
		t.Fatalf("listed %v, want only index/kept", listed)
	}
	if _, err := s.Get(ctx, "index/gone"); !errors.Is(err, chain.ErrNotFound) {
		t.Fatalf("Get of an object the store no longer has: %v, want ErrNotFound", err)
	}
	if s.Stats().Dropped != 1 {
		t.Fatalf("stats %+v, want one dropped", s.Stats())
	}

	// A repository: two points through the cache, the first deleted and
	// collected by a client without the cache; the second still restores
	// through the cache, and the cache drops what the GC removed.
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := demodisk.Create(img, 2<<20, 13, demodisk.MixedImage); err != nil {
		t.Fatal(err)
	}
	repoStore := chain.NewMemStore()
	dir := t.TempDir()
	r, err := snapshot.InitStore(ctx, repoStore, snapshot.InitOptions{BlockSize: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	newCached := func() *cachestore.Store {
		c, err := cachestore.New(chainNopClose{repoStore}, cachestore.Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	create(t, newCached(), img)
	if err := os.WriteFile(img, bytes.Repeat([]byte{0x5a}, 2<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	create(t, newCached(), img)
	other, err := snapshot.OpenStore(ctx, chainNopClose{repoStore}, nil)
	if err != nil {
		t.Fatal(err)
	}
	vm, _ := other.Collection("vm")
	points, err := vm.List(ctx)
	if err != nil || len(points) != 2 {
		t.Fatalf("%v, %v", points, err)
	}
	if err := vm.Delete(ctx, points[0].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := other.GC(ctx, snapshot.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	other.Close()

	c := newCached()
	repo, err := snapshot.OpenStore(ctx, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	vm, _ = repo.Collection("vm")
	target := filepath.Join(t.TempDir(), "restored.img")
	if _, err := vm.RestoreDisk(ctx, snapshot.RestoreOptions{Point: points[1].ID, Disk: "os", Path: target}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(target)
	want, _ := os.ReadFile(img)
	if !bytes.Equal(got, want) {
		t.Fatal("restore through the cache after a GC elsewhere differs")
	}
	// Every cached object is one the store has.
	filepath.Walk(filepath.Join(dir, "objects"), func(path string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() {
			return nil
		}
		name := filepath.ToSlash(strings.TrimPrefix(path, filepath.Join(dir, "objects")+"/"))
		if _, err := repoStore.Stat(ctx, name); err != nil {
			t.Errorf("the cache still holds %s, which the store does not: %v", name, err)
		}
		return nil
	})
}

// blockingStore holds every Get until its context ends or release is
// closed, and says when one has started.
type blockingStore struct {
	chain.Store
	started chan struct{}
	release chan struct{}
}

func (b *blockingStore) Get(ctx context.Context, name string) ([]byte, error) {
	b.started <- struct{}{}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-b.release:
		return b.Store.Get(ctx, name)
	}
}

// Two readers of one object share its download. When the first one's
// context is cancelled, the second, whose context is alive, still gets the
// object: the cancellation is the first reader's, not its.
func TestSharedFetchOutlivesTheFirstReadersContext(t *testing.T) {
	mem := chain.NewMemStore()
	ctx := context.Background()
	const name = "index/" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	if err := mem.Put(ctx, name, []byte("the index")); err != nil {
		t.Fatal(err)
	}
	inner := &blockingStore{Store: mem, started: make(chan struct{}, 2), release: make(chan struct{})}
	s, err := cachestore.New(inner, cachestore.Options{Dir: t.TempDir(), Keep: keepAll})
	if err != nil {
		t.Fatal(err)
	}
	first, cancelFirst := context.WithCancel(ctx)
	firstDone := make(chan error, 1)
	go func() { _, err := s.Get(first, name); firstDone <- err }()
	<-inner.started // the first reader's download is under way

	type result struct {
		data []byte
		err  error
	}
	second := make(chan result, 1)
	go func() {
		data, err := s.Get(ctx, name)
		second <- result{data, err}
	}()
	// Once the second reader waits on the first one's download, cancel the
	// first reader; the second must then start a download of its own.
	for !waitingOnSharedFetch() {
		runtime.Gosched()
	}
	cancelFirst()
	if err := <-firstDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("first reader: %v, want context.Canceled", err)
	}
	select {
	case <-inner.started: // the second reader's own download
	case r := <-second:
		t.Fatalf("second reader: %q, %v; want it to fetch the object itself", r.data, r.err)
	}
	close(inner.release)
	if r := <-second; r.err != nil || string(r.data) != "the index" {
		t.Fatalf("second reader: %q, %v; want the object", r.data, r.err)
	}
}

// waitingOnSharedFetch reports whether a goroutine waits for a download
// another one started (singleflight's duplicate caller): there is no other
// way to see that a reader has joined.
func waitingOnSharedFetch() bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "singleflight.(*Group).Do(") && strings.Contains(g, "sync.(*WaitGroup).Wait(") {
			return true
		}
	}
	return false
}

// newThreeSegmentCase is a cache in a new directory dir around a counting
// MemStore, and an object's bytes that fill three of a cache file's
// checked segments (170 KB).
func newThreeSegmentCase(t *testing.T) (s *cachestore.Store, remote *countingStore, dir string, data []byte) {
	t.Helper()
	remote = newCounting(chain.NewMemStore())
	dir = t.TempDir()
	s, err := cachestore.New(remote, cachestore.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return s, remote, dir, bytes.Repeat([]byte("index file bytes "), 10000)
}
