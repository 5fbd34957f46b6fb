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
	maxPackEntries, indexCheckpointEntries = 100, 300
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
			const blobs = 2000
			remembered := 0
			for i := range blobs {
				b := make([]byte, 4096)
				binary.LittleEndian.PutUint64(b, uint64(i)+1)
				if _, err := w.PutBlob(ctx, DataBlob, Hash(b), b); err != nil {
					t.Fatal(err)
				}
				w.mu.Lock()
				remembered = max(remembered, len(w.pending))
				w.mu.Unlock()
			}
			if err := w.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			// A checkpoint waits for a pack to be stored: at most one
			// checkpoint's worth plus a pack, and the packs being written.
			if limit := indexCheckpointEntries + (maxPackWrites+2)*maxPackEntries; remembered > limit {
				t.Errorf("the writer remembered %d blobs at once, want at most %d", remembered, limit)
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
