package chain

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// RepairBlobs stores good copies of damaged or missing blobs (data found
// again, say on a disk that still holds the same bytes) and rewrites the
// index so that it serves the new copies. The other blobs of a pack that
// held a repaired blob are moved out too, when they read back sound, and the
// damaged pack is removed. Each copy is checked against its ID first; it
// returns how many blobs it re-stored. It holds the exclusive lock.
func (r *Repository) RepairBlobs(ctx context.Context, t BlobType, blobs map[ID][]byte) (int, error) {
	lock, err := r.lock(ctx, true, "repair")
	if err != nil {
		return 0, fmt.Errorf("repair: %w", err)
	}
	defer lock.unlock()
	ctx = lock.ctx // a lost lock stops the repair before it touches the index
	w := &Writer{repo: r, pending: map[ID]struct{}{}, repacking: true}
	defer w.Close()
	repaired := map[ID]bool{}
	for id, data := range blobs {
		if r.HashBlob(data) != id {
			return 0, fmt.Errorf("repair: data offered for blob %s does not match its ID", id.Short())
		}
		if _, err := w.PutBlob(ctx, t, id, data); err != nil {
			return 0, fmt.Errorf("repair: %w", err)
		}
		repaired[id] = true
	}
	if r.config.Version == FormatVersion2 {
		dropped, err := r.repairIndexV2(ctx, lock, w, repaired)
		if err != nil {
			return 0, fmt.Errorf("repair: %w", err)
		}
		if err := r.dropPacks(ctx, dropped); err != nil {
			return len(repaired), fmt.Errorf("repair: %w", err)
		}
		return len(repaired), nil
	}
	state, err := loadIndexState(ctx, r.store, r.config.Version, r.Logger())
	if err != nil {
		return 0, fmt.Errorf("repair: %w", err)
	}
	// Evacuate the packs that held a repaired blob, if all else in them is sound.
	var evacuated []ID
	for pack, entries := range state.entries {
		if countRepaired(entries, repaired) == 0 {
			continue
		}
		moved, err := r.evacuate(ctx, w, pack, entries, repaired)
		if err != nil {
			return 0, fmt.Errorf("repair: %w", err)
		}
		if moved {
			evacuated = append(evacuated, pack)
		}
	}
	if err := w.flushPacks(ctx); err != nil {
		return 0, fmt.Errorf("repair: %w", err)
	}
	// The new index: every pack as it was, less the repaired blobs' old
	// entries, plus the new packs.
	var keep []indexedPack
	newPacks := map[ID]bool{}
	for _, p := range w.written {
		newPacks[p.ID] = true
	}
	for id, entries := range state.entries {
		if newPacks[id] || slices.Contains(evacuated, id) {
			continue
		}
		var kept []packEntry
		for _, e := range entries {
			if !repaired[e.ID] {
				kept = append(kept, e)
			}
		}
		if len(kept) > 0 {
			keep = append(keep, indexedPack{ID: id, Entries: kept})
		}
	}
	keep = append(keep, w.written...)
	if err := lock.stillHeld(ctx); err != nil {
		return 0, fmt.Errorf("repair: %w", err)
	}
	if _, err := r.replaceIndex(ctx, keep, state.files); err != nil {
		return 0, fmt.Errorf("repair: %w", err)
	}
	var dropped []ID
	for _, id := range evacuated {
		if !newPacks[id] {
			dropped = append(dropped, id)
		}
	}
	if err := r.dropPacks(ctx, dropped); err != nil {
		return len(repaired), fmt.Errorf("repair: %w", err)
	}
	return len(repaired), nil
}

// dropPacks deletes packs the index no longer lists, or, while readers
// live (they may read them through an index loaded earlier), leaves them
// in a garbage record for a later GC, as GC's sweep does.
func (r *Repository) dropPacks(ctx context.Context, packs []ID) error {
	if len(packs) == 0 {
		return nil
	}
	readers, err := liveReaders(ctx, r.store)
	if err != nil {
		return err
	}
	if len(readers) > 0 {
		_, err := writeGarbage(ctx, r.store, packs)
		return err
	}
	for _, id := range packs {
		if err := r.store.Delete(ctx, packName(id)); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return nil
}

func countRepaired(entries []packEntry, repaired map[ID]bool) int {
	n := 0
	for _, e := range entries {
		if repaired[e.ID] {
			n++
		}
	}
	return n
}

// evacuate copies the blobs of pack that were not repaired into w, so that
// the pack can be dropped. A pack with more damage is left as it is (moved
// false), for another repair; an error is a failed write.
func (r *Repository) evacuate(ctx context.Context, w *Writer, pack ID, entries []packEntry, repaired map[ID]bool) (moved bool, err error) {
	var rest []packEntry
	var data [][]byte
	for _, e := range entries {
		if repaired[e.ID] {
			continue
		}
		b, err := r.readBlobAt(ctx, pack, e, nil)
		if err != nil {
			return false, nil // more damage here: keep the pack for another repair
		}
		rest, data = append(rest, e), append(data, b)
	}
	for i, e := range rest {
		if _, err := w.PutBlob(ctx, e.Type, e.ID, data[i]); err != nil {
			return false, err
		}
	}
	return true, nil
}
