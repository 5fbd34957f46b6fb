package chain

import (
	"context"
	"encoding/binary"
	"fmt"
	"testing"
)

// A writer's memory does not grow with the number of blobs it stores, even
// when they compress to almost nothing (a disk of zeros with a counter, as
// the scale benchmark's synthetic disks are): packs close at maxPackEntries
// blobs as well as at their size, and an index checkpoint comes every
// indexCheckpointEntries blobs as well as every indexCheckpointPacks packs.
// Before both bounds, 1M such blocks filled a handful of packs, and the
// writer remembered every one of them until the end of the create.
func TestWriterMemoryIsBoundedForTinyBlobs(t *testing.T) {
	savedPack, savedCheckpoint := maxPackEntries, indexCheckpointEntries
	maxPackEntries, indexCheckpointEntries = 100, 1000
	t.Cleanup(func() { maxPackEntries, indexCheckpointEntries = savedPack, savedCheckpoint })
	ctx := context.Background()
	for _, version := range []int{FormatVersion, FormatVersion2} {
		t.Run(fmt.Sprint("version ", version), func(t *testing.T) {
			store := NewMemStore()
			repo := newRepositoryOfVersion(t, store, version)
			w, err := repo.NewWriter(ctx, "test")
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			const blobs = 5000
			remembered, hashed := 0, 0
			for i := range blobs {
				b := make([]byte, 4096)
				binary.LittleEndian.PutUint64(b, uint64(i)+1)
				if _, err := w.PutBlob(ctx, DataBlob, Hash(b), b); err != nil {
					t.Fatal(err)
				}
				w.mu.Lock()
				hashed = max(hashed, len(w.pending))
				remembered = max(remembered, len(w.pending)+entriesOf(w.written)+entriesOf(w.checkpointing))
				w.mu.Unlock()
			}
			// Every blob again, before the last ones are indexed: each is
			// found (in a pack not stored yet, a stored one, or the index),
			// and stored once.
			for i := range blobs {
				b := make([]byte, 4096)
				binary.LittleEndian.PutUint64(b, uint64(i)+1)
				if n, err := w.PutBlob(ctx, DataBlob, Hash(b), b); err != nil || n != 0 {
					t.Fatalf("blob %d put again: %d bytes stored, %v; want 0, nil", i, n, err)
				}
			}
			if err := w.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			// A checkpoint waits for a pack to be stored, and the packs
			// stored while it writes its index file wait for the next: at
			// most two checkpoints' worth, and the packs being written.
			if limit := 2*indexCheckpointEntries + (maxPackWrites+2)*maxPackEntries; remembered > limit {
				t.Errorf("the writer remembered %d blobs at once, want at most %d", remembered, limit)
			}
			// Its hash set holds only the blobs of packs not stored yet: the
			// open ones and those being written.
			if limit := (maxPackWrites + 3) * maxPackEntries; hashed > limit {
				t.Errorf("the writer's hash set held %d blobs at once, want at most %d (packs not stored yet)", hashed, limit)
			}
			packs, err := listPacks(ctx, store)
			if err != nil {
				t.Fatal(err)
			}
			total := 0
			for id, size := range packs {
				entries, err := readPackHeader(ctx, store, id, size)
				if err != nil {
					t.Fatal(err)
				}
				if len(entries) > maxPackEntries {
					t.Errorf("pack %s holds %d blobs, want at most %d", id.Short(), len(entries), maxPackEntries)
				}
				total += len(entries)
			}
			if total != blobs {
				t.Errorf("the packs hold %d blobs, want %d", total, blobs)
			}
			files := 0
			if err := store.List(ctx, indexPrefix, func(ObjectInfo) error { files++; return nil }); err != nil {
				t.Fatal(err)
			}
			if want := blobs / (indexCheckpointEntries + maxPackEntries); files < want {
				t.Errorf("%d index files for %d blobs, want at least %d (a checkpoint every %d blobs)", files, blobs, want, indexCheckpointEntries)
			}
		})
	}
}

// entriesOf counts the entries of packs.
func entriesOf(packs []indexedPack) int {
	n := 0
	for _, p := range packs {
		n += len(p.Entries)
	}
	return n
}
