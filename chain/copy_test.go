package chain_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
)

// A copy moves only what the target lacks; interrupted halfway, it keeps
// what it flushed, and a rerun moves only the rest.
func TestCopierResumes(t *testing.T) {
	ctx := context.Background()
	src := newRepo(t)
	ids, data := randomBlocks(rand.New(rand.NewPCG(8, 8)), 300, 6)
	m := commit(t, src, "p1", ids, data)

	var dst *chain.Repository
	copyOnce := func(ctx context.Context, stopAfter int64) (chain.CopyStats, error) {
		w, err := dst.NewWriter(ctx, "copy")
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		c := &chain.Copier{From: src, To: w, FlushEvery: 1000, Progress: func(s chain.CopyStats) {
			if stopAfter > 0 && s.Blobs >= stopAfter {
				cancel() // killed halfway
			}
		}}
		err = c.CopyDisk(cctx, m.Disks[0])
		if err == nil {
			err = w.SaveManifest(ctx, manifest("copy", m.ID, m.Disks[0]))
		}
		return c.Stats(), err
	}
	dst = newRepo(t) // how much a whole copy moves
	full, err := copyOnce(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	dst = newRepo(t)
	first, err := copyOnce(ctx, full.Blobs/2)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted copy: %v", err)
	}
	second, err := copyOnce(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if first.Blobs == 0 || second.Blobs == 0 || second.Blobs >= full.Blobs || first.Blobs+second.Blobs < full.Blobs {
		t.Errorf("a whole copy moves %d blobs; interrupted %d, then the rerun %d: it did not resume", full.Blobs, first.Blobs, second.Blobs)
	}
	if err := readAll(t, dst, m); err != nil {
		t.Fatalf("copied restore point: %v", err)
	}
	// A third copy moves nothing: the target has the whole tree.
	w, _ := dst.NewWriter(ctx, "copy")
	c := &chain.Copier{From: src, To: w}
	if err := c.CopyDisk(ctx, m.Disks[0]); err != nil || c.Stats().Blobs != 0 {
		t.Errorf("copy into a target that has everything moved %d blobs, %v", c.Stats().Blobs, err)
	}
	w.Close()
	if vr, err := dst.Verify(ctx, chain.VerifyOptions{}); err != nil || !vr.OK() {
		t.Fatalf("verify target: %+v %v", vr, err)
	}
}

// A copy's progress is how much of the disk it has dealt with, moved or
// found present: it ends at the disk's size whether the copy moves all of
// it, part of it (an incremental point whose parent the target has) or
// nothing, and it never goes back.
func TestCopyProgressCoversTheDisk(t *testing.T) {
	ctx := context.Background()
	src := newRepo(t)
	rng := rand.New(rand.NewPCG(9, 9))
	ids, data := randomBlocks(rng, 301, 5) // 301 blocks: the last leaf and node are short
	first := commit(t, src, "p1", ids, data)
	changed, more := randomBlocks(rng, 20, 0)
	for i, id := range changed {
		ids[i*15] = id
		data[id] = more[id]
	}
	second := commit(t, src, "p2", ids, data)
	size := first.Disks[0].Size

	dst := newRepo(t)
	for _, tc := range []struct {
		name  string
		point *chain.Manifest
	}{{"whole", first}, {"incremental", second}, {"present", second}} {
		w, err := dst.NewWriter(ctx, "copy")
		if err != nil {
			t.Fatal(err)
		}
		var last int64
		c := &chain.Copier{From: src, To: w, Progress: func(s chain.CopyStats) {
			if s.Covered < last || s.Covered > size {
				t.Errorf("%s: progress went from %d to %d of %d", tc.name, last, s.Covered, size)
			}
			last = s.Covered
		}}
		if err := c.CopyDisk(ctx, tc.point.Disks[0]); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		w.Close()
		if s := c.Stats(); s.Covered != size {
			t.Errorf("%s copy (%d bytes moved) covered %d bytes of a %d-byte disk", tc.name, s.Bytes, s.Covered, size)
		}
	}
}
