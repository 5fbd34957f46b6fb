package snapshot

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
)

// A sequential reader has the blocks after its read read into the cache
// ahead of it, reaching further as it goes on; a reader that jumps has none.
func TestReadAheadFollowsSequentialReads(t *testing.T) {
	ctx := context.Background()
	const blockSize = 16 << 10
	repo, err := Init(ctx, filepath.Join(t.TempDir(), "repo"), InitOptions{BlockSize: blockSize})
	if err != nil {
		t.Fatal(err)
	}
	image := make([]byte, 8<<20)
	rand.Read(image)
	path := filepath.Join(t.TempDir(), "d.img")
	if err := os.WriteFile(path, image, 0o600); err != nil {
		t.Fatal(err)
	}
	vm, _ := repo.Collection("vm")
	rp, err := vm.Create(ctx, CreateOptions{Disks: []DiskSource{{Name: "d", Path: path}}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := vm.OpenDisk(ctx, rp.ID, "d", ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cached := func(off int64) bool {
		b := off / blockSize
		ids, err := r.leafBlocks(ctx, b/int64(r.g.Fanout))
		if err != nil {
			t.Fatal(err)
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		_, ok := r.blocks.items[ids[b%int64(r.g.Fanout)]]
		return ok
	}
	a := newReadAhead(ctx, r, 4<<20)
	s := a.newStream()
	buf := make([]byte, 128<<10)
	read := func(off int64) {
		if _, err := s.ReadAt(ctx, buf, off); err != nil {
			t.Fatal(err)
		}
		a.wait()
	}

	read(0)
	for _, off := range []int64{128 << 10, 1 << 20, 1<<20 + 128<<10 - 1} {
		if !cached(off) {
			t.Errorf("after a read of [0, 128 KiB), the block at %d was not read ahead", off)
		}
	}
	if cached(2 << 20) {
		t.Error("the first read-ahead reached 2 MiB, past its first window")
	}
	read(128 << 10) // sequential: the window doubles to 2 MiB past this read
	if !cached(2<<20 + 128<<10) {
		t.Error("a second sequential read did not read further ahead")
	}

	read(6 << 20) // a jump
	if cached(6<<20 + 256<<10) {
		t.Error("a jump was read ahead of")
	}
}
