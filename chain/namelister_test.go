package chain_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
)

// callCounter counts the calls a repository makes of its store, by kind.
// It passes ListNames through when the store underneath has it.
type callCounter struct {
	chain.Store
	list, listNames, stat, get atomic.Int64
}

func (s *callCounter) List(ctx context.Context, prefix string, fn func(chain.ObjectInfo) error) error {
	s.list.Add(1)
	return s.Store.List(ctx, prefix, fn)
}

func (s *callCounter) ListNames(ctx context.Context, prefix string, fn func(string) error) error {
	s.listNames.Add(1)
	if nl, ok := s.Store.(chain.NameLister); ok {
		return nl.ListNames(ctx, prefix, fn)
	}
	return s.Store.List(ctx, prefix, func(info chain.ObjectInfo) error { return fn(info.Name) })
}

func (s *callCounter) Stat(ctx context.Context, name string) (chain.ObjectInfo, error) {
	s.stat.Add(1)
	return s.Store.Stat(ctx, name)
}

func (s *callCounter) Get(ctx context.Context, name string) ([]byte, error) {
	s.get.Add(1)
	return s.Store.Get(ctx, name)
}

func (s *callCounter) reset() {
	s.list.Store(0)
	s.listNames.Store(0)
	s.stat.Store(0)
	s.get.Store(0)
}

// LocalStore.ListNames lists exactly what List lists, whatever the prefix:
// nested names, no directories, no temporary files of unfinished Puts.
func TestLocalStoreListNamesListsWhatListLists(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := chain.NewLocalStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"config", "manifests/vm/a", "manifests/vm/b", "manifests/vm2/a", "packs/ab/abc", "packs/cd/cde", "state/vm"} {
		if err := s.Put(ctx, name, []byte(name)); err != nil {
			t.Fatal(err)
		}
	}
	// An unfinished Put's temporary file, and an empty directory.
	if err := os.WriteFile(filepath.Join(dir, "manifests", "vm", ".tmp-x-1-2"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "manifests", "empty"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, prefix := range []string{"", "manifests/", "manifests/vm", "manifests/vm/", "manifests/vm/a", "packs/", "packs/a", "state/", "nothing/"} {
		var byList, byNames []string
		if err := s.List(ctx, prefix, func(info chain.ObjectInfo) error { byList = append(byList, info.Name); return nil }); err != nil {
			t.Fatal(err)
		}
		if err := s.ListNames(ctx, prefix, func(name string) error { byNames = append(byNames, name); return nil }); err != nil {
			t.Fatal(err)
		}
		sort.Strings(byList)
		sort.Strings(byNames)
		if !slices.Equal(byList, byNames) {
			t.Errorf("prefix %q: ListNames %q, List %q", prefix, byNames, byList)
		}
	}
	stop := errors.New("stop")
	if err := s.ListNames(ctx, "", func(string) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("ListNames returned %v, want the callback's error", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.ListNames(cancelled, "", func(string) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("ListNames with a cancelled context: %v", err)
	}
}

// Listing a collection lists names only, and asks the store for the time
// of the damaged manifests alone: LocalStore's List would stat every one.
// The listing is the same as ever: damaged ones with when they were
// stored, oldest first.
func TestListManifestsListsNamesOnly(t *testing.T) {
	ctx := context.Background()
	local, err := chain.NewLocalStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store := &callCounter{Store: local}
	repo := newRepoOn(t, store)
	w, err := repo.NewWriter(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().UTC()
	const points = 30
	for i := range points {
		m := manifest("vm", fmt.Sprintf("p%02d", i), chain.DiskManifest{Name: "d", Size: 4096, BlockSize: chain.DefaultBlockSize})
		m.Created = start.Add(time.Duration(points-i) * time.Second) // IDs and times in opposite orders
		if err := w.SaveManifest(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	if err := local.Put(ctx, "manifests/vm/p07", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	store.reset()
	listed, err := repo.ListManifestsWithDamaged(ctx, "vm")
	if err != nil {
		t.Fatal(err)
	}
	if n, ln, st := store.list.Load(), store.listNames.Load(), store.stat.Load(); n != 0 || ln != 1 || st != 1 {
		t.Errorf("listing 30 points (1 damaged): %d List, %d ListNames, %d Stat calls; want 0, 1, 1", n, ln, st)
	}
	if len(listed) != points {
		t.Fatalf("listed %d points, want %d", len(listed), points)
	}
	var order []string
	for _, l := range listed {
		if l.ID == "p07" {
			if l.Damage == nil || l.Stored.IsZero() || l.Manifest != nil {
				t.Errorf("damaged p07 listed as %+v", l)
			}
			continue
		}
		if l.Damage != nil || l.Manifest == nil || l.Manifest.ID != l.ID {
			t.Errorf("sound %s listed as %+v", l.ID, l)
		}
		order = append(order, l.ID)
	}
	if want := "p29 p28 p27"; !strings.HasPrefix(strings.Join(order, " "), want) {
		t.Errorf("order %q, want oldest (by time) first: %s ...", order, want)
	}
}
