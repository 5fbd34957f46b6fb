package chain_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/chain/storetest"
)

// listIndex returns the names of the index objects in store.
func listIndex(t *testing.T, store chain.Store) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	if err := store.List(context.Background(), "index/", func(i chain.ObjectInfo) error { names[i.Name] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	return names
}

// A process that opens the repository, or refreshes its index, while a GC
// elsewhere replaces the index files it has just listed, loads the new
// index instead of failing with "not found": the soak test saw every kind
// of command fail to open the repository that way.
func TestIndexLoadWhileGCReplacesIt(t *testing.T) {
	for _, tc := range []struct {
		name    string
		refresh bool // an open repository refreshes its index, rather than a new one loading it
	}{
		{"open", false},
		{"refresh", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			mem := chain.NewMemStore()
			repo := newRepoOn(t, mem)
			rng := rand.New(rand.NewPCG(11, 11))
			ids, data := randomBlocks(rng, 60, 0)
			keep := commit(t, repo, "keep", ids, data)

			faulty := storetest.NewFaultStore(mem, 1)
			var reader *chain.Repository
			if tc.refresh {
				var err error
				if reader, err = chain.Open(ctx, faulty, nil); err != nil {
					t.Fatal(err)
				}
				if err := reader.LoadIndex(ctx); err != nil {
					t.Fatal(err)
				}
			}
			// The victim's index file is new to the loader, which lists it,
			// and the GC below removes it.
			before := listIndex(t, mem)
			victimIDs, victimData := randomBlocks(rng, 60, 0)
			commit(t, repo, "victim", victimIDs, victimData)
			var victimIndex string
			for name := range listIndex(t, mem) {
				if !before[name] {
					victimIndex = name
				}
			}

			entered, release := make(chan struct{}, 1), make(chan struct{})
			// Version 1 reads an index file whole, version 2 opens it with ranged reads.
			op := storetest.OpGet
			if repo.Config().Version == chain.FormatVersion2 {
				op = storetest.OpReadAt
			}
			faulty.Inject(storetest.Fault{Op: op, Prefix: victimIndex, Times: 1, Entered: entered, Wait: release})
			type result struct {
				repo *chain.Repository
				err  error
			}
			done := make(chan result, 1)
			go func() {
				if reader != nil {
					lock, err := reader.OpenReader(ctx, "test", nil)
					if err == nil {
						lock.Close()
					}
					done <- result{reader, err}
					return
				}
				r, err := chain.Open(ctx, faulty, nil)
				if err == nil {
					err = r.LoadIndex(ctx)
				}
				done <- result{r, err}
			}()
			<-entered // the loader has listed the index and is reading a file of it

			if err := repo.DeleteManifest(ctx, "vm", "victim"); err != nil {
				t.Fatal(err)
			}
			if _, err := repo.GC(ctx, chain.GCOptions{RepackUnused: 0.01}); err != nil {
				t.Fatal(err)
			}
			if listIndex(t, mem)[victimIndex] {
				t.Fatalf("GC kept index file %s: the test shows nothing", victimIndex)
			}
			close(release)

			res := <-done
			if res.err != nil {
				if errors.Is(res.err, chain.ErrNotFound) || strings.Contains(res.err.Error(), "not found") {
					t.Fatalf("load beside a GC: %v (the index it listed was replaced; it must load the new one)", res.err)
				}
				t.Fatal(res.err)
			}
			if err := readAll(t, res.repo, keep); err != nil {
				t.Fatalf("read the kept point after the load: %v", err)
			}
		})
	}
}

// indexReads counts the reads of index files.
type indexReads struct {
	chain.Store
	n atomic.Int64
}

func (s *indexReads) Get(ctx context.Context, name string) ([]byte, error) {
	if strings.HasPrefix(name, "index/") {
		s.n.Add(1)
	}
	return s.Store.Get(ctx, name)
}

func (s *indexReads) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if strings.HasPrefix(name, "index/") {
		s.n.Add(1)
	}
	return s.Store.ReadAt(ctx, name, p, off)
}

// Opening a repository and listing its restore points read no index file:
// their cost does not grow with the number of chunks. The first blob read
// loads the index.
func TestOpenAndListReadNoIndex(t *testing.T) {
	ctx := context.Background()
	mem := chain.NewMemStore()
	repo := newRepoOn(t, mem)
	ids, data := randomBlocks(rand.New(rand.NewPCG(12, 12)), 40, 0)
	m := commit(t, repo, "p1", ids, data)

	store := &indexReads{Store: mem}
	opened, err := chain.Open(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if points, err := opened.ListManifests(ctx, "vm"); err != nil || len(points) != 1 {
		t.Fatalf("list: %d points, %v", len(points), err)
	}
	if n := store.n.Load(); n != 0 {
		t.Errorf("open and list read %d index files; want none", n)
	}
	if err := readAll(t, opened, m); err != nil {
		t.Fatalf("the first read after a lazy open: %v", err)
	}
	if store.n.Load() == 0 {
		t.Error("reading a blob did not load the index")
	}
}
