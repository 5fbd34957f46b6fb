package chain

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"
)

// FuzzIndexV2Load feeds the loading of a version 2 repository's index an
// arbitrary index file and an arbitrary pack, stored under the names their
// bytes hash to, as a store would hold them. Loading opens the index file
// (or takes it for damaged) and recovers, from its own header, the pack no
// sound file lists: the overlay of recovered blobs is what this decodes
// beyond the index file itself. Whatever the bytes: the load succeeds
// (damage is skipped, never fatal), the pack is listed by a sound file,
// recovered or set aside as unreadable, and nothing else; every recovered
// entry passes its checks and lies inside the pack's data, and a lookup
// finds it; reading the file whole (as verify and version 1's loader do)
// fails with ErrCorrupt or returns sound entries; nothing panics.
func FuzzIndexV2Load(f *testing.F) {
	pack, entries := fuzzPack([]string{"a", "bb", "ccc"})
	packID := Hash(pack)
	listing := func(pack ID, entries []packEntry) []byte {
		var listed []indexEntry
		for _, e := range entries {
			listed = append(listed, indexEntry{packEntry: e, Pack: pack})
		}
		sortIndexEntries(listed)
		data, err := encodeIndexV2(listed, time.Unix(1_800_000_000, 0))
		if err != nil {
			f.Fatal(err)
		}
		return data
	}
	f.Add(listing(packID, entries), pack)                        // the file lists the pack
	f.Add(listing(Hash([]byte("other")), entries), pack)         // the pack is recovered
	f.Add(listing(packID, entries[:1]), pack)                    // listed, in part
	f.Add([]byte(indexV2Magic), appendPackHeader(nil, nil, nil)) // an empty pack
	f.Add([]byte{}, []byte(packMagic))
	f.Fuzz(func(t *testing.T, index, pack []byte) {
		checkIndexV2Load(t, index, pack)
		if sealed := resealIndexV2(index); sealed != nil { // past the checksums, to the checks behind them
			checkIndexV2Load(t, sealed, pack)
		}
	})
}

// checkIndexV2Load stores index and pack, loads the index, and checks
// what FuzzIndexV2Load promises.
func checkIndexV2Load(t *testing.T, index, pack []byte) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	store := NewMemStore()
	indexName := indexPrefix + Hash(index).String()
	packID := Hash(pack)
	if err := store.Put(ctx, indexName, index); err != nil {
		t.Fatal(err)
	}
	if err := store.Put(ctx, packName(packID), pack); err != nil {
		t.Fatal(err)
	}
	x, err := loadIndexV2Set(ctx, store, log)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	listed := false
	for _, file := range x.files {
		_, found := slices.BinarySearchFunc(file.packs, packID, func(a, b ID) int { return bytes.Compare(a[:], b[:]) })
		listed = listed || found
	}
	_, unreadable := x.unreadable[packID]
	if n := btoi(listed) + btoi(x.recovered[packID]) + btoi(unreadable); n != 1 || len(x.recovered)+len(x.unreadable) > 1 {
		t.Fatalf("the pack is listed %v, recovered %v, unreadable %v (of %d recovered, %d unreadable)", listed, x.recovered[packID], unreadable, len(x.recovered), len(x.unreadable))
	}
	if len(x.files)+len(x.damaged) != 1 {
		t.Fatalf("%d files opened and %d damaged, of one", len(x.files), len(x.damaged))
	}
	for _, e := range x.recoveredEntries[packID] {
		if e.check() != nil || int64(e.Offset)+int64(e.Length) > int64(len(pack)) {
			t.Fatalf("recovered a bad entry %+v from a pack of %d bytes", e, len(pack))
		}
		got, in, ok, err := x.find(ctx, e.ID)
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("find %s: %v", e.ID.Short(), err)
		}
		if err == nil && !ok {
			t.Fatalf("recovered blob %s is not found", e.ID.Short())
		}
		if err == nil && in == packID && got.check() != nil {
			t.Fatalf("found a bad entry %+v", got)
		}
	}
	packs, err := readIndexV2File(ctx, store, indexName)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("read whole: %v, want ErrCorrupt", err)
		}
		return
	}
	for _, p := range packs {
		for _, e := range p.Entries {
			if e.check() != nil {
				t.Fatalf("read whole: accepted a bad entry %+v", e)
			}
		}
	}
}

// fuzzPack returns a sound pack of the given blobs, stored raw, and its
// entries.
func fuzzPack(blobs []string) ([]byte, []packEntry) {
	var data []byte
	var entries []packEntry
	for _, b := range blobs {
		entries = append(entries, packEntry{ID: Hash([]byte(b)), Type: DataBlob, Offset: uint32(len(data)), Length: uint32(len(b)), RawLength: uint32(len(b))})
		data = append(data, b...)
	}
	return appendPackHeader(data, entries, nil), entries
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
