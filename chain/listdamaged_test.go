package chain_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
)

// ListManifestsWithDamaged lists a damaged manifest, with why; ListManifests
// leaves it out.
func TestListManifestsWithDamaged(t *testing.T) {
	ctx := context.Background()
	store := chain.NewMemStore()
	repo := newRepoOn(t, store)
	rng := rand.New(rand.NewPCG(1, 2))
	ids, data := randomBlocks(rng, 2, 0)
	commit(t, repo, "a", ids, data)
	commit(t, repo, "b", ids, data)
	if err := store.Put(ctx, "manifests/vm/a", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	listed, err := repo.ListManifestsWithDamaged(ctx, "vm")
	if err != nil || len(listed) != 2 {
		t.Fatalf("listed %+v, %v", listed, err)
	}
	for _, l := range listed {
		switch l.ID {
		case "a":
			if l.Manifest != nil || !errors.Is(l.Damage, chain.ErrCorrupt) || l.Stored.IsZero() {
				t.Errorf("damaged a: %+v", l)
			}
		case "b":
			if l.Manifest == nil || l.Manifest.ID != "b" || l.Damage != nil {
				t.Errorf("sound b: %+v", l)
			}
		}
	}
	sound, err := repo.ListManifests(ctx, "vm")
	if err != nil || len(sound) != 1 || sound[0].ID != "b" {
		t.Errorf("ListManifests: %+v, %v; want b alone", sound, err)
	}
}
