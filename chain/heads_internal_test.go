package chain

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// headsRepo is a repository of the test format with points p0..p(n-1) in
// collection vm, one a second; each has disk "a", the even ones "b" too.
func headsRepo(t testing.TB, n int) (*Repository, []*Manifest) {
	t.Helper()
	ctx := context.Background()
	cfg, err := NewTestConfig(0)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := Init(ctx, NewMemStore(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	w, err := repo.NewWriter(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	base := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	var ms []*Manifest
	for i := range n {
		m := &Manifest{ID: fmt.Sprintf("p%d", i), Collection: "vm", Created: base.Add(time.Duration(i) * time.Second), Consistency: "crash",
			Disks: []DiskManifest{{Name: "a", Size: 4096, BlockSize: DefaultBlockSize}}}
		if i%2 == 0 {
			m.Disks = append(m.Disks, DiskManifest{Name: "b", Size: 4096, BlockSize: DefaultBlockSize})
		}
		if err := w.SaveManifest(ctx, m); err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	return repo, ms
}

// The record a rebuild stores decodes to itself, says what the manifests
// say, and saves after it keep it so, with the set digest of the names
// listed now.
func TestHeadsRecordRoundTrip(t *testing.T) {
	ctx := context.Background()
	repo, ms := headsRepo(t, 5)
	found, ok, err := repo.NewestManifests(ctx, "vm", []string{"", "a", "b", "c"}, true)
	if err != nil || !ok {
		t.Fatalf("NewestManifests: %v, %v", ok, err)
	}
	if found[""].ID != "p4" || found["a"].ID != "p4" || found["b"].ID != "p4" || found["c"] != nil {
		t.Errorf("found %v", found)
	}
	rec, err := repo.loadHeads(ctx, "vm")
	if err != nil || rec == nil {
		t.Fatalf("record after the rebuild: %v, %v", rec, err)
	}
	ids, _ := repo.ListManifestIDs(ctx, "vm")
	if rec.set() != repo.manifestSetOf("vm", ids) || rec.Points != len(ms) {
		t.Errorf("the record's set is not the listed one: %+v", rec)
	}
	data, err := encodeHeads(rec)
	if err != nil {
		t.Fatal(err)
	}
	back, err := decodeHeads("heads/vm", "vm", data)
	if err != nil || !reflect.DeepEqual(back, rec) {
		t.Fatalf("round trip: %+v, %v; want %+v", back, err, rec)
	}
	if _, err := decodeHeads("heads/vm2", "vm2", data); err == nil {
		t.Error("a record of collection vm decoded as vm2's")
	}
	// A point saved with the record in place keeps it in step.
	w, _ := repo.NewWriter(ctx, "test")
	p5 := &Manifest{ID: "p5", Collection: "vm", Created: ms[4].Created.Add(time.Second), Consistency: "crash",
		Disks: []DiskManifest{{Name: "a", Size: 4096, BlockSize: DefaultBlockSize}}}
	if err := w.SaveManifest(ctx, p5); err != nil {
		t.Fatal(err)
	}
	w.Close()
	rec, _ = repo.loadHeads(ctx, "vm")
	ids, _ = repo.ListManifestIDs(ctx, "vm")
	if rec.set() != repo.manifestSetOf("vm", ids) || rec.Disks["a"].ID != "p5" || rec.Disks["b"].ID != "p4" || rec.Newest.ID != "p5" {
		t.Errorf("after a save: %+v", rec)
	}
	// Deleting a point before the heads keeps it in step; deleting a head
	// deletes it.
	if err := repo.DeleteManifest(ctx, "vm", "p1"); err != nil {
		t.Fatal(err)
	}
	rec, _ = repo.loadHeads(ctx, "vm")
	ids, _ = repo.ListManifestIDs(ctx, "vm")
	if rec == nil || rec.set() != repo.manifestSetOf("vm", ids) || rec.Points != 5 {
		t.Errorf("after deleting p1: %+v", rec)
	}
	if err := repo.DeleteManifest(ctx, "vm", "p5"); err != nil {
		t.Fatal(err)
	}
	if rec, err := repo.loadHeads(ctx, "vm"); rec != nil || err != nil {
		t.Errorf("after deleting the head p5: %+v, %v; want no record", rec, err)
	}
	// Readers do not rebuild.
	if _, ok, err := repo.NewestManifests(ctx, "vm", []string{"a"}, false); ok || err != nil {
		t.Errorf("without a record and without rebuild: ok %v, %v", ok, err)
	}
	found, ok, err = repo.NewestManifests(ctx, "vm", []string{"a", "b"}, true)
	if err != nil || !ok || found["a"].ID != "p4" || found["b"].ID != "p4" {
		t.Errorf("rebuilt after deleting p5: %v %v %v", found, ok, err)
	}
}

// The set digest depends on the names, not their order, and one name more
// or less changes it.
func TestManifestSetDigest(t *testing.T) {
	repo, _ := headsRepo(t, 0)
	a := repo.manifestSetOf("vm", []string{"x", "y", "z"})
	if b := repo.manifestSetOf("vm", []string{"z", "x", "y"}); a != b {
		t.Error("the digest depends on the order")
	}
	for _, other := range [][]string{{"x", "y"}, {"x", "y", "z", "w"}, {"x", "y", "Z"}} {
		if repo.manifestSetOf("vm", other) == a {
			t.Errorf("%q has the digest of x y z", other)
		}
	}
	if repo.manifestSetOf("vm2", []string{"x", "y", "z"}).digest == a.digest {
		t.Error("another collection's names have the same digest")
	}
}

// FuzzHeadsRecord: whatever bytes a heads record holds, decoding them
// returns an error, or a record whose every name is valid, whose heads are
// no newer than its newest point, and which encodes to bytes that decode
// to the same record.
func FuzzHeadsRecord(f *testing.F) {
	repo, _ := headsRepo(f, 4)
	ctx := context.Background()
	if _, _, err := repo.NewestManifests(ctx, "vm", nil, true); err != nil {
		f.Fatal(err)
	}
	data, err := repo.store.Get(ctx, headsName("vm"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add([]byte(`{"version":1,"collection":"vm","points":0,"set":"` + string(bytes.Repeat([]byte("0"), 64)) + `","disks":{}}`))
	f.Add([]byte(`{"version":1,"collection":"vm","points":1,"set":"` + string(bytes.Repeat([]byte("a"), 64)) + `","newest":{"id":"x","created":"2026-11-23T10:00:00Z"},"disks":{"d":{"id":"y","created":"2026-11-23T11:00:00Z"}}}`))
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := decodeHeads("heads/vm", "vm", data)
		if err != nil {
			return
		}
		if rec.Collection != "vm" || rec.Version != headsVersion || rec.Points < 0 {
			t.Fatalf("accepted %+v", rec)
		}
		for disk, h := range rec.Disks {
			if CheckName("disk", disk) != nil || CheckName("restore point", h.ID) != nil || rec.Newest == nil || h.newerThan(*rec.Newest) {
				t.Fatalf("accepted disk %q head %+v, newest %+v", disk, h, rec.Newest)
			}
		}
		again, err := encodeHeads(rec)
		if err != nil {
			t.Fatal(err)
		}
		back, err := decodeHeads("heads/vm", "vm", again)
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if back.set() != rec.set() || !reflect.DeepEqual(back.Disks, rec.Disks) && len(back.Disks)+len(rec.Disks) > 0 {
			t.Fatalf("round trip changed the record: %+v, %+v", rec, back)
		}
	})
}

// manifestSetOf, which hashes every name in one reused buffer, agrees with
// the element hash a writer adds or removes one name with.
func TestManifestSetOfIsTheXOROfElements(t *testing.T) {
	repo, _ := headsRepo(t, 1)
	ids := []string{"a", "20261124T034500.000001Z-0badcafe", "b", strings.Repeat("x", 200)}
	var want manifestSet
	for _, id := range ids {
		want.toggle(repo.manifestElement("vm", id), 1)
	}
	if got := repo.manifestSetOf("vm", ids); got != want {
		t.Fatalf("manifestSetOf: %d, %x; the elements make %d, %x", got.points, got.digest, want.points, want.digest)
	}
	if got := repo.manifestSetOf("vm2", ids); got == want {
		t.Fatal("the same digest for another collection's names")
	}
}
