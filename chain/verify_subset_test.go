package chain_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
)

// verifySubsetRepo stores eight restore points of their own blocks (a pack
// or more each) and damages a data blob of the first: it returns the
// repository, the damaged blob and the object name of its pack.
func verifySubsetRepo(t *testing.T) (*chain.Repository, chain.Store, chain.ID, string) {
	t.Helper()
	ctx := context.Background()
	store := chain.NewMemStore()
	cfg, _ := chain.NewTestConfig(0)
	cfg.TreeFanout = 4
	repo, err := chain.Init(ctx, store, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var victim chain.ID
	for i := range 8 {
		ids, data := randomBlocks(rng, 6, 0)
		commit(t, repo, fmt.Sprintf("p%d", i), ids, data)
		if i == 0 {
			victim = ids[0]
		}
	}
	loc, ok := repo.LocateBlob(victim)
	if !ok {
		t.Fatal("blob not in index")
	}
	pack, _ := store.Get(ctx, loc.Pack)
	pack[loc.Offset+loc.Length/2] ^= 0xff
	store.Put(ctx, loc.Pack, pack)
	return repo, store, victim, loc.Pack
}

// -structure-only reads no pack data (so misses a flipped byte) but still
// finds a missing pack; N/M subsets read each pack in exactly one group;
// 100% reads them all.
func TestVerifyStructureOnlyAndDataSubsets(t *testing.T) {
	ctx := context.Background()
	repo, store, victim, packObject := verifySubsetRepo(t)
	full, err := repo.Verify(ctx, chain.VerifyOptions{})
	if err != nil || full.OK() || full.PacksNotRead != 0 || full.Packs < 8 {
		t.Fatalf("full verify: %+v, %v", full, err)
	}
	structure, err := repo.Verify(ctx, chain.VerifyOptions{StructureOnly: true})
	if err != nil || !structure.OK() || structure.BytesRead != 0 || structure.Packs != 0 || structure.PacksNotRead != full.Packs {
		t.Fatalf("structure-only verify read data or found the flipped byte: %+v, %v", structure, err)
	}
	read, damaged := 0, 0
	for n := 1; n <= 4; n++ {
		sub, err := chain.ParseDataSubset(fmt.Sprintf("%d/4", n))
		if err != nil {
			t.Fatal(err)
		}
		vr, err := repo.Verify(ctx, chain.VerifyOptions{ReadData: &sub})
		if err != nil {
			t.Fatal(err)
		}
		if vr.Packs+vr.PacksNotRead != full.Packs {
			t.Errorf("subset %s: %d read + %d not read, want %d packs", sub, vr.Packs, vr.PacksNotRead, full.Packs)
		}
		read += vr.Packs
		if !vr.OK() {
			damaged++
		}
	}
	if read != full.Packs || damaged != 1 {
		t.Errorf("subsets 1/4..4/4 read %d packs (want %d, each once) and %d found the damage (want 1)", read, full.Packs, damaged)
	}
	all, _ := chain.ParseDataSubset("100%")
	if vr, err := repo.Verify(ctx, chain.VerifyOptions{ReadData: &all}); err != nil || vr.OK() || vr.Packs != full.Packs {
		t.Errorf("100%%: %+v, %v", vr, err)
	}
	some, _ := chain.ParseDataSubset("10%")
	if vr, err := repo.Verify(ctx, chain.VerifyOptions{ReadData: &some}); err != nil || vr.Packs != (full.Packs+9)/10 {
		t.Errorf("10%% of %d packs: read %d, want %d", full.Packs, vr.Packs, (full.Packs+9)/10)
	}
	for _, bad := range []string{"0/4", "5/4", "1/0", "x", "0%", "101%", "1/2/3"} {
		if _, err := chain.ParseDataSubset(bad); err == nil {
			t.Errorf("ParseDataSubset(%q) accepted", bad)
		}
	}
	// A pack the index names but the store lacks is found without reading data.
	store.Delete(ctx, packObject)
	if vr, err := repo.Verify(ctx, chain.VerifyOptions{StructureOnly: true}); err != nil || vr.OK() {
		t.Errorf("structure-only verify of a missing pack: %+v, %v", vr, err)
	}
	_ = victim
}

// Verify's JSON names objects in fields, never in prose, and its lists are
// never null.
func TestVerifyReportJSONNamesObjectsInFields(t *testing.T) {
	ctx := context.Background()
	repo, _, victim, packObject := verifySubsetRepo(t)
	vr, err := repo.Verify(ctx, chain.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(vr)
	var report struct {
		Damage []map[string]any `json:"damage"`
	}
	if err := json.Unmarshal(data, &report); err != nil || len(report.Damage) == 0 {
		t.Fatalf("%s: %v", data, err)
	}
	var d map[string]any
	for _, x := range report.Damage {
		if x["kind"] == "data_blob" {
			d = x
		}
	}
	if d == nil {
		t.Fatalf("no data_blob damage in %s", data)
	}
	if d["kind"] != "data_blob" || d["id"] != victim.String() || "packs/"+d["pack"].(string)[:2]+"/"+d["pack"].(string) != packObject {
		t.Errorf("damage %s: want kind data_blob, id %s, pack of %s", data, victim, packObject)
	}
	if _, ok := d["object"]; ok || strings.Contains(d["reason"].(string), victim.String()) {
		t.Errorf("damage %s names the object in prose", data)
	}
	if rps, ok := d["restore_points"].([]any); !ok || len(rps) != 1 {
		t.Errorf("damage %s: restore_points", data)
	}
	clean := newRepo(t)
	vr, err = clean.Verify(ctx, chain.VerifyOptions{})
	if data, _ := json.Marshal(vr); err != nil || !strings.Contains(string(data), `"damage":[]`) {
		t.Errorf("a clean report: %s, %v; want \"damage\":[]", data, err)
	}
}
