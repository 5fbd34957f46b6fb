package chain

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"syscall"
	"testing"
)

// fullStore fails every Put of a pack, as a full disk would. If failLater
// is set, a Put of a pack first waits until it reports true.
type fullStore struct {
	Store
	failLater func() bool
}

func (s *fullStore) Put(ctx context.Context, name string, data []byte) error {
	if strings.HasPrefix(name, "packs/") {
		for s.failLater != nil && !s.failLater() {
			runtime.Gosched()
		}
		return fmt.Errorf("put %s: %w", name, syscall.ENOSPC)
	}
	return s.Store.Put(ctx, name, data)
}

func newTestRepository(t *testing.T, store Store) *Repository {
	t.Helper()
	cfg, err := NewTestConfig(0)
	if err != nil {
		t.Fatal(err)
	}
	cfg.PackSize = 1 << 20
	repo, err := Init(context.Background(), store, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return repo
}

// putRandom puts one tree blob and n incompressible data blobs of size
// bytes, so that a tree pack and a data pack are open; it returns the first
// error (a failed background write makes the puts after it fail).
func putRandom(ctx context.Context, w *Writer, n, size int) error {
	node := encodeTreeNode(nil, 0, []ID{Hash([]byte("a")), Hash([]byte("b"))})
	if _, err := w.PutBlob(ctx, TreeBlob, Hash(node), node); err != nil {
		return err
	}
	for range n {
		b := make([]byte, size)
		rand.Read(b)
		if _, err := w.PutBlob(ctx, DataBlob, Hash(b), b); err != nil {
			return err
		}
	}
	return nil
}

// Every pack buffer a writer takes is released once, whatever fails: the
// store refusing the packs Flush writes, or the full packs written in the
// background. They are mapped outside the Go heap, 18 MiB each for the
// default pack size: a leak is never collected.
func TestWriterReleasesPackBuffersWhenPacksFail(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name            string
		blobs           int // of 64 KiB: 16 fill a 1 MiB pack, written in the background
		viaSaveManifest bool
		// failInFlush: the background writes fail only once Flush has
		// taken the open packs.
		failInFlush bool
	}{
		{"flush writes the open packs", 3, false, false},
		{"save manifest", 3, true, false},
		{"a background write failed before flush", 40, false, false},
		{"a background write failed during flush", 40, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := packBuffersInUse.Load()
			store := &fullStore{Store: NewMemStore()}
			repo := newTestRepository(t, store)
			w, err := repo.NewWriter(ctx, "test")
			if err != nil {
				t.Fatal(err)
			}
			if tc.failInFlush {
				store.failLater = func() bool {
					w.mu.Lock()
					defer w.mu.Unlock()
					return w.open[DataBlob] == nil && w.open[TreeBlob] == nil
				}
			}
			putErr := putRandom(ctx, w, tc.blobs, 64<<10)
			if tc.viaSaveManifest {
				err = w.SaveManifest(ctx, &Manifest{Collection: "vm", ID: "p1"})
			} else {
				err = w.Flush(ctx)
			}
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("flush into a full store: %v (puts: %v)", err, putErr)
			}
			if err := w.Flush(ctx); err == nil {
				t.Error("a second flush after a failed one succeeded")
			}
			w.Close()
			w.Close()
			if n := packBuffersInUse.Load() - before; n != 0 {
				t.Errorf("%d pack buffers not released after the failed flush and close", n)
			}
		})
	}
}
