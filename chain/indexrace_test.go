package chain_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
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
			faulty.Inject(storetest.Fault{Op: storetest.OpGet, Prefix: victimIndex, Times: 1, Entered: entered, Wait: release})
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
