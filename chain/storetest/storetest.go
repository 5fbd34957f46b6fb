// Package storetest is the conformance suite every [chain.Store] must pass:
// it checks the contract written in the Store's doc comment.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
)

// Run checks the Store contract against stores made by newStore, which must
// return an empty store each time it is called.
func Run(t *testing.T, newStore func(t *testing.T) chain.Store) {
	ctx := context.Background()

	t.Run("PutGet", func(t *testing.T) {
		s := newStore(t)
		for _, tc := range []struct {
			name string
			data []byte
		}{
			{"config", []byte(`{"version":1}`)},
			{"packs/ab/abcdef", bytes.Repeat([]byte{7}, 1<<20)},
			{"empty", nil},
		} {
			if err := s.Put(ctx, tc.name, tc.data); err != nil {
				t.Fatalf("Put(%q): %v", tc.name, err)
			}
			got, err := s.Get(ctx, tc.name)
			if err != nil {
				t.Fatalf("Get(%q): %v", tc.name, err)
			}
			if !bytes.Equal(got, tc.data) {
				t.Fatalf("Get(%q) = %d bytes, want %d", tc.name, len(got), len(tc.data))
			}
			info, err := s.Stat(ctx, tc.name)
			if err != nil || info.Size != int64(len(tc.data)) || info.Name != tc.name {
				t.Fatalf("Stat(%q) = %+v, %v; want size %d", tc.name, info, err, len(tc.data))
			}
		}
	})

	t.Run("PutReplaces", func(t *testing.T) {
		s := newStore(t)
		mustPut(t, s, "a/b", []byte("first"))
		mustPut(t, s, "a/b", []byte("second, longer"))
		if got, _ := s.Get(ctx, "a/b"); string(got) != "second, longer" {
			t.Fatalf("Get after replace = %q", got)
		}
	})

	t.Run("PutDoesNotAlias", func(t *testing.T) {
		s := newStore(t)
		data := []byte("original")
		mustPut(t, s, "x", data)
		copy(data, "CHANGED!")
		if got, _ := s.Get(ctx, "x"); string(got) != "original" {
			t.Fatalf("store kept a reference to the caller's buffer: %q", got)
		}
	})

	t.Run("ReadAt", func(t *testing.T) {
		s := newStore(t)
		data := []byte("0123456789abcdef")
		mustPut(t, s, "p", data)
		for _, tc := range []struct {
			off, n  int
			wantErr bool
		}{
			{0, 16, false}, {3, 4, false}, {15, 1, false}, {16, 0, false},
			{10, 7, true}, {17, 1, true}, {-1, 1, true},
		} {
			p := make([]byte, tc.n)
			err := s.ReadAt(ctx, "p", p, int64(tc.off))
			if tc.wantErr {
				if err == nil {
					t.Errorf("ReadAt(off %d, n %d) succeeded past the end", tc.off, tc.n)
				}
				continue
			}
			if err != nil {
				t.Errorf("ReadAt(off %d, n %d): %v", tc.off, tc.n, err)
			} else if !bytes.Equal(p, data[tc.off:tc.off+tc.n]) {
				t.Errorf("ReadAt(off %d, n %d) = %q", tc.off, tc.n, p)
			}
		}
	})

	t.Run("Missing", func(t *testing.T) {
		s := newStore(t)
		if _, err := s.Get(ctx, "nope"); !errors.Is(err, chain.ErrNotFound) {
			t.Errorf("Get missing: %v, want ErrNotFound", err)
		}
		if err := s.ReadAt(ctx, "nope", make([]byte, 1), 0); !errors.Is(err, chain.ErrNotFound) {
			t.Errorf("ReadAt missing: %v, want ErrNotFound", err)
		}
		if _, err := s.Stat(ctx, "nope"); !errors.Is(err, chain.ErrNotFound) {
			t.Errorf("Stat missing: %v, want ErrNotFound", err)
		}
		if err := s.Delete(ctx, "nope"); err != nil && !errors.Is(err, chain.ErrNotFound) {
			t.Errorf("Delete missing: %v, want nil or ErrNotFound", err)
		}
	})

	t.Run("DeleteTwice", func(t *testing.T) {
		s := newStore(t)
		mustPut(t, s, "d/1", []byte("x"))
		mustPut(t, s, "d/2", []byte("y"))
		for i := range 2 {
			if err := s.Delete(ctx, "d/1"); err != nil && !errors.Is(err, chain.ErrNotFound) {
				t.Errorf("Delete #%d: %v, want nil or ErrNotFound", i+1, err)
			}
		}
		if got := list(t, s, ""); fmt.Sprint(got) != "[d/2]" {
			t.Errorf("List after deleting d/1 twice = %v, want [d/2]", got)
		}
	})

	t.Run("Delete", func(t *testing.T) {
		s := newStore(t)
		mustPut(t, s, "d/1", []byte("x"))
		if err := s.Delete(ctx, "d/1"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, "d/1"); !errors.Is(err, chain.ErrNotFound) {
			t.Fatalf("Get after Delete: %v, want ErrNotFound", err)
		}
		if names := list(t, s, ""); len(names) != 0 {
			t.Fatalf("List after Delete = %v", names)
		}
	})

	t.Run("List", func(t *testing.T) {
		s := newStore(t)
		for _, n := range []string{"config", "index/01", "index/02", "packs/aa/aa1", "packs/ab/ab2", "manifests/vm1/p1", "manifests/vm10/p2"} {
			mustPut(t, s, n, []byte(n))
		}
		for _, tc := range []struct {
			prefix string
			want   []string
		}{
			{"index/", []string{"index/01", "index/02"}},
			{"packs/", []string{"packs/aa/aa1", "packs/ab/ab2"}},
			{"packs/a", []string{"packs/aa/aa1", "packs/ab/ab2"}},
			{"manifests/vm1/", []string{"manifests/vm1/p1"}},
			{"manifests/vm1", []string{"manifests/vm1/p1", "manifests/vm10/p2"}},
			{"missing/", nil},
			{"", []string{"config", "index/01", "index/02", "manifests/vm1/p1", "manifests/vm10/p2", "packs/aa/aa1", "packs/ab/ab2"}},
		} {
			got := list(t, s, tc.prefix)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("List(%q) = %v, want %v", tc.prefix, got, tc.want)
			}
			if nl, ok := s.(chain.NameLister); ok { // the names alone: the same names
				if got := listNames(t, nl, tc.prefix); fmt.Sprint(got) != fmt.Sprint(tc.want) {
					t.Errorf("ListNames(%q) = %v, want %v", tc.prefix, got, tc.want)
				}
			}
		}
		stop := errors.New("stop")
		calls := 0
		err := s.List(ctx, "", func(chain.ObjectInfo) error { calls++; return stop })
		if !errors.Is(err, stop) || calls != 1 {
			t.Errorf("List did not stop at fn's error: err %v after %d calls", err, calls)
		}
	})

	t.Run("InvalidNames", func(t *testing.T) {
		s := newStore(t)
		for _, name := range []string{"", "/abs", "a//b", "../up", "a/../b", "a/./b", ".hidden", "a/.tmp-x", "sp ace", "nul\x00", "a/", `back\slash`, "ünï", strings.Repeat("x", 256)} {
			if err := s.Put(ctx, name, []byte("x")); !errors.Is(err, chain.ErrInvalidName) {
				t.Errorf("Put(%q) = %v, want ErrInvalidName", name, err)
			}
			if err := s.PutIfAbsent(ctx, name, []byte("x")); !errors.Is(err, chain.ErrInvalidName) {
				t.Errorf("PutIfAbsent(%q) = %v, want ErrInvalidName", name, err)
			}
		}
		if names := list(t, s, ""); len(names) != 0 {
			t.Errorf("refused names left objects: %v", names)
		}
	})

	t.Run("CaseMatters", func(t *testing.T) {
		s := newStore(t)
		mustPut(t, s, "state/VM1", []byte("upper"))
		mustPut(t, s, "state/vm1", []byte("lower"))
		for name, want := range map[string]string{"state/VM1": "upper", "state/vm1": "lower"} {
			if got, err := s.Get(ctx, name); err != nil || string(got) != want {
				t.Errorf("Get(%q) = %q, %v; want %q", name, got, err, want)
			}
		}
		if got := list(t, s, "state/"); fmt.Sprint(got) != "[state/VM1 state/vm1]" {
			t.Errorf("List = %v, want both", got)
		}
	})

	t.Run("ModTime", func(t *testing.T) {
		s := newStore(t)
		before := time.Now()
		mustPut(t, s, "m/a", []byte("x"))
		info, err := s.Stat(ctx, "m/a")
		if err != nil {
			t.Fatal(err)
		}
		// The store's clock, which for a local store is this host's: it
		// may differ from time.Now by clock skew, never by much.
		if d := info.ModTime.Sub(before); d < -time.Minute || d > time.Minute {
			t.Errorf("Stat ModTime %v is %v away from now (%v)", info.ModTime, d, before)
		}
		var listed chain.ObjectInfo
		if err := s.List(ctx, "m/", func(i chain.ObjectInfo) error { listed = i; return nil }); err != nil {
			t.Fatal(err)
		}
		if listed.Name != "m/a" || !listed.ModTime.Equal(info.ModTime) {
			t.Errorf("List says %+v, Stat says %+v", listed, info)
		}
		mustPut(t, s, "m/a", []byte("replaced"))
		again, err := s.Stat(ctx, "m/a")
		if err != nil {
			t.Fatal(err)
		}
		if again.ModTime.Before(info.ModTime) {
			t.Errorf("ModTime went back on replace: %v, then %v", info.ModTime, again.ModTime)
		}
	})

	t.Run("PutIfAbsent", func(t *testing.T) {
		s := newStore(t)
		if err := s.PutIfAbsent(ctx, "locks/l1", []byte("first")); err != nil {
			t.Fatal(err)
		}
		if err := s.PutIfAbsent(ctx, "locks/l1", []byte("second")); !errors.Is(err, chain.ErrExists) {
			t.Errorf("PutIfAbsent over an object: %v, want ErrExists", err)
		}
		if got, err := s.Get(ctx, "locks/l1"); err != nil || string(got) != "first" {
			t.Errorf("after a refused PutIfAbsent: %q, %v; want the first content", got, err)
		}
		if info, err := s.Stat(ctx, "locks/l1"); err != nil || info.Size != 5 {
			t.Errorf("Stat: %+v, %v", info, err)
		}
		if err := s.Delete(ctx, "locks/l1"); err != nil {
			t.Fatal(err)
		}
		if err := s.PutIfAbsent(ctx, "locks/l1", []byte("third")); err != nil {
			t.Errorf("PutIfAbsent after Delete: %v", err)
		}
		if got, _ := s.Get(ctx, "locks/l1"); string(got) != "third" {
			t.Errorf("after Delete and PutIfAbsent: %q", got)
		}
		if got := list(t, s, ""); fmt.Sprint(got) != "[locks/l1]" {
			t.Errorf("List = %v: PutIfAbsent left something behind", got)
		}
	})

	t.Run("PutIfAbsentRace", func(t *testing.T) {
		s := newStore(t)
		const n = 16
		var wg sync.WaitGroup
		errs := make([]error, n)
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				errs[i] = s.PutIfAbsent(ctx, "manifests/vm/p1", bytes.Repeat([]byte{byte(i)}, 1000+i))
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Errorf("PutIfAbsent succeeded for both %d and %d", winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, chain.ErrExists):
				t.Errorf("PutIfAbsent %d: %v, want ErrExists", i, err)
			}
		}
		if winner < 0 {
			t.Fatal("no PutIfAbsent succeeded")
		}
		got, err := s.Get(ctx, "manifests/vm/p1")
		if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{byte(winner)}, 1000+winner)) {
			t.Errorf("the object holds %d bytes (%v), not the winner's (%d)", len(got), err, winner)
		}
		if names := list(t, s, ""); len(names) != 1 {
			t.Errorf("List after the race = %v, want one object", names)
		}
	})

	t.Run("PrefixNames", func(t *testing.T) {
		s := newStore(t)
		mustPut(t, s, "a", []byte("file"))
		mustPut(t, s, "x/y/z", []byte("deep"))
		for _, name := range []string{"a/b", "a/b/c", "x", "x/y"} {
			if err := s.Put(ctx, name, []byte("clash")); !errors.Is(err, chain.ErrInvalidName) {
				t.Errorf("Put(%q) beside a and x/y/z: %v, want ErrInvalidName", name, err)
			}
			if err := s.PutIfAbsent(ctx, name, []byte("clash")); !errors.Is(err, chain.ErrInvalidName) {
				t.Errorf("PutIfAbsent(%q) beside a and x/y/z: %v, want ErrInvalidName", name, err)
			}
			if _, err := s.Get(ctx, name); !errors.Is(err, chain.ErrNotFound) {
				t.Errorf("Get(%q), a name that is no object: %v, want ErrNotFound", name, err)
			}
			if _, err := s.Stat(ctx, name); !errors.Is(err, chain.ErrNotFound) {
				t.Errorf("Stat(%q), a name that is no object: %v, want ErrNotFound", name, err)
			}
			if err := s.ReadAt(ctx, name, make([]byte, 1), 0); !errors.Is(err, chain.ErrNotFound) {
				t.Errorf("ReadAt(%q), a name that is no object: %v, want ErrNotFound", name, err)
			}
			if err := s.Delete(ctx, name); err != nil && !errors.Is(err, chain.ErrNotFound) {
				t.Errorf("Delete(%q), a name that is no object: %v", name, err)
			}
		}
		if got := list(t, s, ""); fmt.Sprint(got) != "[a x/y/z]" {
			t.Errorf("List = %v, want [a x/y/z]: a refused or no-op call changed the store", got)
		}
		if got, _ := s.Get(ctx, "a"); string(got) != "file" {
			t.Errorf("a = %q after refused puts under it", got)
		}
		// Names that only share a prefix that is not a path are unrelated.
		mustPut(t, s, "ab", []byte("sibling"))
		mustPut(t, s, "x/yy", []byte("sibling"))
		// Once the objects under a name are gone, the name is free.
		if err := s.Delete(ctx, "x/y/z"); err != nil {
			t.Fatal(err)
		}
		mustPut(t, s, "x/y", []byte("now a file"))
		if err := s.Delete(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		if err := s.PutIfAbsent(ctx, "a/b", []byte("now a directory")); err != nil {
			t.Errorf("PutIfAbsent(a/b) after deleting a: %v", err)
		}
		if got := list(t, s, ""); fmt.Sprint(got) != "[a/b ab x/y x/yy]" {
			t.Errorf("List = %v, want [a/b ab x/y x/yy]", got)
		}
	})

	t.Run("Close", func(t *testing.T) {
		s := newStore(t)
		mustPut(t, s, "c", []byte("x"))
		if _, err := s.Get(ctx, "c"); err != nil {
			t.Fatal(err)
		}
		if err := s.ReadAt(ctx, "c", make([]byte, 1), 0); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})

	t.Run("Cancelled", func(t *testing.T) {
		s := newStore(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := s.Put(cctx, "c", []byte("x")); !errors.Is(err, context.Canceled) {
			t.Errorf("Put with cancelled context: %v", err)
		}
		if _, err := s.Get(ctx, "c"); !errors.Is(err, chain.ErrNotFound) {
			t.Errorf("a cancelled Put left an object: %v", err)
		}
		if _, err := s.Get(cctx, "c"); !errors.Is(err, context.Canceled) {
			t.Errorf("Get with cancelled context: %v", err)
		}
		if err := s.PutIfAbsent(cctx, "c", []byte("x")); !errors.Is(err, context.Canceled) {
			t.Errorf("PutIfAbsent with cancelled context: %v", err)
		}
		if _, err := s.Stat(ctx, "c"); !errors.Is(err, chain.ErrNotFound) {
			t.Errorf("a cancelled PutIfAbsent left an object: %v", err)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		s := newStore(t)
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for i := range 16 {
			wg.Go(func() {
				name := fmt.Sprintf("c/%02d", i)
				data := bytes.Repeat([]byte{byte(i)}, 4096)
				for range 4 {
					if err := s.Put(ctx, name, data); err != nil {
						errs <- err
						return
					}
					got, err := s.Get(ctx, name)
					if err != nil || !bytes.Equal(got, data) {
						errs <- fmt.Errorf("Get(%s) after Put: %d bytes, %v", name, len(got), err)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if n := len(list(t, s, "c/")); n != 16 {
			t.Errorf("List after concurrent puts: %d objects, want 16", n)
		}
	})
}

func mustPut(t *testing.T, s chain.Store, name string, data []byte) {
	t.Helper()
	if err := s.Put(context.Background(), name, data); err != nil {
		t.Fatalf("Put(%q): %v", name, err)
	}
}

func list(t *testing.T, s chain.Store, prefix string) []string {
	t.Helper()
	var names []string
	err := s.List(context.Background(), prefix, func(info chain.ObjectInfo) error {
		names = append(names, info.Name)
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	sort.Strings(names)
	return names
}

// listNames is list through the store's ListNames.
func listNames(t *testing.T, s chain.NameLister, prefix string) []string {
	t.Helper()
	var names []string
	if err := s.ListNames(context.Background(), prefix, func(name string) error {
		names = append(names, name)
		return nil
	}); err != nil {
		t.Fatalf("ListNames(%q): %v", prefix, err)
	}
	sort.Strings(names)
	return names
}

// Clone copies every object of src into a new MemStore, for a test that
// goes on from the same state twice.
func Clone(t testing.TB, src chain.Store) *chain.MemStore {
	t.Helper()
	ctx := context.Background()
	dst := chain.NewMemStore()
	err := src.List(ctx, "", func(info chain.ObjectInfo) error {
		data, err := src.Get(ctx, info.Name)
		if err != nil {
			return err
		}
		return dst.Put(ctx, info.Name, data)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}
