package snapshot_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

// Creates on two collections run alongside deletes and GCs. GC must never
// remove a chunk that a create deduplicated against: afterwards every
// restore point restores bit-exact and verify is clean.
func TestGCDuringCreates(t *testing.T) {
	ctx := context.Background()
	repo, _ := newRepo(t)
	dir := t.TempDir()
	// Both collections' disks start from the same image, so creates dedup
	// against chunks the other collection's deleted points also used.
	base := makeDisk(t, dir, "base.img", 2<<20, 8)
	var wg sync.WaitGroup
	type point struct {
		c    *snapshot.Collection
		id   string
		want []byte
	}
	var mu sync.Mutex
	var kept []point
	errs := make(chan error, 16)
	for w, name := range []string{"a", "b"} {
		c, _ := repo.Collection(name)
		disk := filepath.Join(dir, name+".img")
		copyFile(t, base, disk)
		wg.Go(func() {
			for i := range 8 {
				if _, err := demodisk.Scatter(disk, 0.05, uint64(100*w+i)); err != nil {
					errs <- err
					return
				}
				want := readFile(t, disk)
				rp, err := c.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}, LockWait: time.Minute}) // GC runs beside it
				if err != nil {
					errs <- fmt.Errorf("create %s/%d: %w", name, i, err)
					return
				}
				if i%2 == 0 { // delete every other point, so GC has work
					if err := c.Delete(ctx, rp.ID); err != nil {
						errs <- err
						return
					}
					continue
				}
				mu.Lock()
				kept = append(kept, point{c, rp.ID, want})
				mu.Unlock()
			}
		})
	}
	wg.Go(func() {
		for range 6 {
			if _, err := repo.GC(ctx, snapshot.GCOptions{RepackUnused: 0.01}); err != nil && !errors.Is(err, chain.ErrLocked) {
				errs <- fmt.Errorf("gc: %w", err)
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if _, err := repo.GC(ctx, snapshot.GCOptions{RepackUnused: 0.01}); err != nil {
		t.Fatal(err)
	}
	for _, p := range kept {
		restoreAndCompare(t, p.c, p.id, "d", p.want)
	}
	if vr, err := repo.Verify(ctx, snapshot.VerifyOptions{}); err != nil || !vr.OK() {
		t.Fatalf("verify: %+v, %v", vr, err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	if err := writeFile(to, readFile(t, from)); err != nil {
		t.Fatal(err)
	}
}
