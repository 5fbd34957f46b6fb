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
