// Package storetest is the conformance suite every [chain.Store] must pass:
// it checks the contract written in the Store's doc comment.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"

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
		if err := s.Delete(ctx, "nope"); !errors.Is(err, chain.ErrNotFound) {
			t.Errorf("Delete missing: %v, want ErrNotFound", err)
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
		for _, name := range []string{"", "/abs", "a//b", "../up", "a/../b", "a/./b", "UPPER", "sp ace", "nul\x00", "a/"} {
			if err := s.Put(ctx, name, []byte("x")); !errors.Is(err, chain.ErrInvalidName) {
				t.Errorf("Put(%q) = %v, want ErrInvalidName", name, err)
			}
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
