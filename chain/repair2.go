package chain

import (
	"context"
	"errors"
)

// repairIndexV2 is the rest of RepairBlobs in a version 2 repository, once
// w holds the repaired blobs: it evacuates the packs that held a repaired
// blob, as RepairBlobs does, and writes the new index as a streaming merge
// of the old files without the entries of the repaired blobs and of the
// evacuated packs, plus files for the new and recovered packs. Its memory
// is the entries of the packs it evacuates, not the index's. It returns
// the packs the new index no longer lists, for dropPacks.
func (r *Repository) repairIndexV2(ctx context.Context, lock *repoLock, w *Writer, repaired map[ID]bool) ([]ID, error) {
	x, _, err := r.loadIndexV2Checked(ctx, false)
	if err != nil {
		return nil, err
	}
	// The packs that hold a repaired blob, and then their entries.
	affected := map[ID][]packEntry{}
	for _, f := range x.files {
		err := f.iterate(ctx, func(_ int, e indexEntry) error {
			if repaired[e.ID] {
				affected[e.Pack] = nil
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	for pack, entries := range x.recoveredEntries {
		for _, e := range entries {
			if repaired[e.ID] {
				affected[pack] = nil
			}
		}
	}
	listed := map[ID]map[ID]bool{} // per affected pack, the blobs collected
	collect := func(pack ID, e packEntry) {
		if listed[pack] == nil {
			listed[pack] = map[ID]bool{}
		}
		if !listed[pack][e.ID] { // a pack may be listed by two files
			listed[pack][e.ID] = true
			affected[pack] = append(affected[pack], e)
		}
	}
	for _, f := range x.files {
		err := f.iterate(ctx, func(_ int, e indexEntry) error {
			if _, ok := affected[e.Pack]; ok {
				collect(e.Pack, e.packEntry)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	for pack, entries := range x.recoveredEntries {
		if _, ok := affected[pack]; ok {
			for _, e := range entries {
				collect(pack, e)
			}
		}
	}

	// Evacuate the packs that held a repaired blob, if all else in them is sound.
	evacuated := map[ID]bool{}
	for pack, entries := range affected {
		moved, err := r.evacuate(ctx, w, pack, entries, repaired)
		if err != nil {
			return nil, err
		}
		if moved {
			evacuated[pack] = true
		}
	}
	if err := w.flushPacks(ctx); err != nil {
		return nil, err
	}
	newPacks := map[ID]bool{}
	for _, p := range w.written {
		newPacks[p.ID] = true
	}

	// The new index: every pack as it was, less the repaired blobs' old
	// entries and the evacuated packs, plus the new packs.
	if err := lock.lost(); err != nil {
		return nil, err
	}
	packs := append([]indexedPack(nil), w.written...)
	for pack, entries := range x.recoveredEntries {
		if newPacks[pack] || evacuated[pack] {
			continue
		}
		var kept []packEntry
		for _, e := range entries {
			if !repaired[e.ID] {
				kept = append(kept, e)
			}
		}
		if len(kept) > 0 {
			packs = append(packs, indexedPack{ID: pack, Entries: kept})
		}
	}
	files, err := writeIndexV2Files(ctx, r.store, packs)
	if err != nil {
		return nil, err
	}
	_, err = mergeIndexV2(ctx, x.files, func(e indexEntry) bool {
		return !newPacks[e.Pack] && !evacuated[e.Pack] && !repaired[e.ID]
	}, 0, func(ctx context.Context, file []byte) error {
		f, err := putIndexV2File(ctx, r.store, file)
		if err == nil {
			files = append(files, f)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	isNew := map[string]bool{}
	for _, f := range files {
		isNew[f.name] = true
	}
	old := append([]string(nil), x.damaged...)
	for _, f := range x.files {
		old = append(old, f.name)
	}
	for _, name := range old {
		if !isNew[name] {
			if err := r.store.Delete(ctx, name); err != nil && !errors.Is(err, ErrNotFound) {
				return nil, err
			}
		}
	}
	fresh := newIndexV2Set()
	if err := fresh.addWritten(ctx, r.store, files); err != nil {
		return nil, err
	}
	r.setIndex(fresh)
	var dropped []ID
	for id := range evacuated {
		if !newPacks[id] {
			dropped = append(dropped, id)
		}
	}
	return dropped, nil
}
