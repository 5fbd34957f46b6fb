package chain_test

import (
	"context"
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
	live := filepath.Join(dir, "packs", "ab", fmt.Sprintf(".tmp-%s-%d-789", hostTagForTest(), os.Getpid()))
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

// hostTagForTest is this host's tag in temp file names, computed as the
// store computes it.
func hostTagForTest() string {
	host, _ := os.Hostname()
	return chain.Hash([]byte(host)).String()[:8]
}
