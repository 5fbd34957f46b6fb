package snapshot_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

// Stats adds up what points need, what only they need, and the dedup
// ratio; what it says deleting a point frees is what GC then frees.
func TestStatsSizesAndWhatDeletingFrees(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	repoDir, disk, other := filepath.Join(dir, "repo"), filepath.Join(dir, "d.img"), filepath.Join(dir, "o.img")
	repo, err := snapshot.Init(ctx, repoDir, snapshot.InitOptions{Format: testFormat()})
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	vm1, _ := repo.Collection("vm1")
	vm2, _ := repo.Collection("vm2")
	create := func(c *snapshot.Collection, path string) *snapshot.RestorePoint {
		t.Helper()
		rp, err := c.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: path}}})
		if err != nil {
			t.Fatal(err)
		}
		return rp
	}
	const size = 4 << 20
	demodisk.Create(disk, size, 1, demodisk.Mix{Random: 1})
	a := create(vm1, disk)
	if _, err := demodisk.Scatter(disk, 0.1, 2); err != nil {
		t.Fatal(err)
	}
	b := create(vm1, disk)
	demodisk.Create(other, size, 7, demodisk.Mix{Random: 1})
	c := create(vm2, other)
	d := create(vm2, other) // the same bytes again: needs nothing new

	st, err := repo.Stats(ctx, snapshot.StatsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.RestorePoints != 4 || st.LogicalBytes != 4*size || len(st.Collections) != 2 || st.MissingBlobs != 0 || st.DamagedPoints != 0 {
		t.Fatalf("repository stats: %+v", st)
	}
	s1, s2 := st.Collections[0], st.Collections[1]
	if s1.Name != "vm1" || s2.Name != "vm2" || len(s1.Points) != 2 || len(s2.Points) != 2 {
		t.Fatalf("collections: %+v", st.Collections)
	}
	pa, pb, pc, pd := s1.Points[0], s1.Points[1], s2.Points[0], s2.Points[1]
	if pa.ID != a.ID || pb.ID != b.ID || pc.ID != c.ID || pd.ID != d.ID {
		t.Fatalf("points out of order: %+v", st.Collections)
	}
	// The first point of a fresh repository needs exactly what it added.
	if pa.StoredBytes != pa.AddedBytes || pa.StoredBytes == 0 || pa.LogicalBytes != size {
		t.Errorf("first point: stored %d, added %d, logical %d", pa.StoredBytes, pa.AddedBytes, pa.LogicalBytes)
	}
	// b shares the unchanged blocks with a: each frees only its own.
	if pa.FreedIfDeleted <= 0 || pa.FreedIfDeleted >= pa.StoredBytes/2 || pb.FreedIfDeleted <= 0 || pb.FreedIfDeleted >= pb.StoredBytes/2 {
		t.Errorf("a frees %d of %d, b %d of %d: want a small share each", pa.FreedIfDeleted, pa.StoredBytes, pb.FreedIfDeleted, pb.StoredBytes)
	}
	// c and d are the same bytes: neither frees anything alone, d added nothing.
	if pc.FreedIfDeleted != 0 || pd.FreedIfDeleted != 0 || pd.AddedBytes != 0 || pd.StoredBytes != pc.StoredBytes {
		t.Errorf("identical points c %+v and d %+v", pc, pd)
	}
	// The collections share nothing: each frees all it needs; the
	// repository needs both, and nothing else.
	if s1.FreedIfDeleted != s1.StoredBytes || s2.FreedIfDeleted != s2.StoredBytes || st.StoredBytes != s1.StoredBytes+s2.StoredBytes || st.Chunks != s1.Chunks+s2.Chunks {
		t.Errorf("vm1 %+v, vm2 %+v, repository %+v", s1.SpaceStats, s2.SpaceStats, st.SpaceStats)
	}
	if s2.StoredBytes != pc.StoredBytes || s2.LogicalBytes != 2*size || s2.DedupRatio < 1.9*pc.DedupRatio {
		t.Errorf("vm2 stores c's bytes once for two points: %+v, c %+v", s2.SpaceStats, pc.SpaceStats)
	}
	if want := float64(st.LogicalBytes) / float64(st.StoredBytes); st.DedupRatio != want || st.PackBytes < st.StoredBytes || st.Packs == 0 || st.Packs > st.PackFiles {
		t.Errorf("repository: %+v", st)
	}
	// Deleting a, then a GC that repacks whatever has dead bytes, frees
	// what Stats said (give or take pack headers).
	before := packBytes(t, repoDir)
	if err := vm1.Delete(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.GC(ctx, snapshot.GCOptions{RepackUnused: 1e-9}); err != nil {
		t.Fatal(err)
	}
	freed := before - packBytes(t, repoDir)
	if diff := freed - pa.FreedIfDeleted; diff < -pa.FreedIfDeleted/10 || diff > pa.FreedIfDeleted/10 {
		t.Errorf("deleting a freed %d bytes; stats said %d", freed, pa.FreedIfDeleted)
	}
	// JSON lists are never null.
	only, err := repo.Stats(ctx, snapshot.StatsOptions{Collection: "vm2"})
	if err != nil || len(only.Collections) != 1 || only.Collections[0].Name != "vm2" {
		t.Fatalf("stats of vm2 only: %+v, %v", only.Collections, err)
	}
	empty, _ := snapshot.Init(ctx, filepath.Join(dir, "empty"), snapshot.InitOptions{Format: testFormat()})
	es, err := empty.Stats(ctx, snapshot.StatsOptions{})
	if data, _ := json.Marshal(es); err != nil || strings.Contains(string(data), "null") {
		t.Errorf("stats of an empty repository: %s, %v", data, err)
	}
	if _, err := repo.Stats(ctx, snapshot.StatsOptions{Collection: "vm3"}); err == nil || !strings.Contains(err.Error(), "vm3") {
		t.Errorf("stats of a missing collection: %v", err)
	}
}
