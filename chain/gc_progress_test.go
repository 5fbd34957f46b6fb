package chain_test

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
)

// GC reports its progress: every restore point marked, the bytes it
// repacks, the packs it deletes, each phase ending at its total.
func TestGCReportsProgress(t *testing.T) {
	ctx := context.Background()
	store := chain.NewMemStore()
	repo := newRepoOn(t, store)
	rng := rand.New(rand.NewPCG(5, 6))
	shared, data := randomBlocks(rng, 8, 0)
	for _, id := range []string{"a", "b", "c"} {
		own, ownData := randomBlocks(rng, 4, 0)
		for k, v := range ownData {
			data[k] = v
		}
		commit(t, repo, id, append(append([]chain.ID{}, shared...), own...), data)
	}
	if err := repo.DeleteManifest(ctx, "vm", "b"); err != nil {
		t.Fatal(err)
	}
	last := map[string]chain.GCProgress{}
	calls := 0
	report, err := repo.GC(ctx, chain.GCOptions{RepackUnused: 1e-9, Progress: func(p chain.GCProgress) {
		calls++
		if p.Done < 0 || p.Done > p.Total {
			t.Errorf("progress %+v out of range", p)
		}
		if prev, ok := last[p.Phase]; ok && p.Done < prev.Done {
			t.Errorf("progress went back: %+v after %+v", p, prev)
		}
		last[p.Phase] = p
	}})
	if err != nil {
		t.Fatal(err)
	}
	if m := last["mark"]; m.Total != 2 || m.Done != 2 {
		t.Errorf("mark progress ended at %+v, want 2 of 2 restore points", m)
	}
	if r, ok := last["repack"]; report.PacksRepacked > 0 && (!ok || r.Done != r.Total || r.Total == 0) {
		t.Errorf("repacked %d packs; repack progress ended at %+v", report.PacksRepacked, r)
	}
	if d, ok := last["delete"]; report.PacksDeleted+report.PacksRepacked > 0 && (!ok || d.Done != d.Total || d.Total == 0) {
		t.Errorf("deleted %d packs, repacked %d; delete progress ended at %+v", report.PacksDeleted, report.PacksRepacked, d)
	}
	if report.PacksDeleted+report.PacksRepacked == 0 {
		t.Fatalf("the test deleted nothing: %+v", report)
	}
}
