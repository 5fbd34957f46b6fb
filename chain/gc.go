package chain

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// GCOptions tunes garbage collection.
type GCOptions struct {
	// DryRun reports what would be removed and removes nothing.
	DryRun bool
	// RepackUnused: a pack whose unreferenced bytes exceed this fraction of
	// its size has its live blobs copied to new packs and is removed. 0 means
	// the default, 0.05; 1 never repacks (only wholly unused packs go).
	RepackUnused float64
	// LockWait: wait this long for creates, here or in other processes, to
	// finish; 0 fails at once with ErrLocked.
	LockWait time.Duration
	// IgnoreDamaged treats restore points whose manifest is damaged as
	// deleted, so the chunks only they need are swept. Without it GC refuses
	// to run while any manifest is damaged: the point can still be saved
	// (its manifest put back from a copy) only while its chunks are there.
	IgnoreDamaged bool
	// Progress, if set, is called as GC goes: through the restore points
	// it marks from, the bytes of live blobs it repacks, and the packs it
	// deletes.
	Progress func(GCProgress)
	// IncompleteUploadAge: in a store that keeps interrupted uploads (S3
	// multipart uploads), GC aborts those started longer ago than this,
	// by this host's clock against the store's. 0 means LockStaleAfter:
	// a writer that ran so long without refreshing its lock is taken for
	// dead, so no live writer's upload is aborted.
	IncompleteUploadAge time.Duration
}

// GCProgress says how far a GC is: Done of Total in its current phase.
type GCProgress struct {
	// Phase is "mark" (Done and Total count restore points), "repack"
	// (bytes of live blobs copied to new packs) or "delete" (packs).
	Phase       string
	Done, Total int64
}

// report calls the Progress callback, if any.
func (o GCOptions) report(phase string, done, total int64) {
	if o.Progress != nil {
		o.Progress(GCProgress{Phase: phase, Done: done, Total: total})
	}
}

// GCReport says what a garbage collection removed (or, in a dry run, would).
type GCReport struct {
	DryRun         bool  `json:"dry_run"`
	RestorePoints  int   `json:"restore_points"`
	LiveBlobs      int   `json:"live_blobs"`
	PacksDeleted   int   `json:"packs_deleted"`
	PacksRepacked  int   `json:"packs_repacked"`
	PacksWritten   int   `json:"packs_written"`
	BlobsRemoved   int   `json:"blobs_removed"`
	BytesBefore    int64 `json:"bytes_before"`
	BytesAfter     int64 `json:"bytes_after"`
	IndexFiles     int   `json:"index_files_replaced"`
	TempFiles      int   `json:"temp_files_removed"`
	UnindexedPacks int   `json:"unindexed_packs_removed"`
	// DamagedManifests are the manifests IgnoreDamaged treated as deleted.
	DamagedManifests []string `json:"damaged_manifests_ignored,omitempty"`
	// PacksDeferred: packs dropped but left in place, and recorded under
	// garbage/, because live readers may still read them.
	PacksDeferred int `json:"packs_deferred"`
	// UploadsAborted: interrupted uploads (S3 multipart uploads) older
	// than GCOptions.IncompleteUploadAge that were aborted, freeing
	// the parts they had stored.
	UploadsAborted int `json:"incomplete_uploads_aborted"`
	// GarbagePacksDeleted: packs an earlier GC deferred, deleted now that
	// no live reader can read them.
	GarbagePacksDeleted int `json:"garbage_packs_deleted"`
}

// BytesReclaimed is the pack space the collection freed.
func (r GCReport) BytesReclaimed() int64 { return r.BytesBefore - r.BytesAfter }

// GC removes every blob that no restore point references (mark and sweep).
// It holds the exclusive lock, so no create runs meanwhile: a blob a create
// deduplicated against cannot vanish before that create's manifest is
// committed. Readers are not blocked: GC marks what their locks name, and
// defers deleting packs they may still read (see ReaderLock). A GC
// interrupted at any point leaves the repository intact: new packs and the
// new index are durable before anything old is deleted.
func (r *Repository) GC(ctx context.Context, opts GCOptions) (report GCReport, err error) {
	report = GCReport{DryRun: opts.DryRun}
	if opts.RepackUnused == 0 {
		opts.RepackUnused = 0.05
	}
	lock, err := r.lockWait(ctx, true, "gc", opts.LockWait)
	if err != nil {
		return report, fmt.Errorf("gc: %w", err)
	}
	defer lock.unlock()
	// Everything below runs under the lock's context: it ends, with
	// ErrLockLost, if the lock cannot be kept; the error then says so.
	ctx = lock.ctx
	defer func() {
		if lost := lock.lost(); err != nil && lost != nil && !errors.Is(err, ErrLockLost) {
			err = fmt.Errorf("gc: %w, so it stopped: %w", lost, err)
		}
	}()

	if remover, ok := findStore[tempRemover](r.store); ok && !opts.DryRun {
		if report.TempFiles, err = remover.RemoveTemp(ctx); err != nil {
			return report, fmt.Errorf("gc: %w", err)
		}
	}
	if err := r.abortStaleUploads(ctx, opts, &report); err != nil {
		return report, fmt.Errorf("gc: %w", err)
	}
	if r.config.Version == FormatVersion2 {
		if err := r.gcV2(ctx, lock, opts, &report); err != nil {
			return report, fmt.Errorf("gc: %w", err)
		}
		return report, nil
	}
	state, err := loadIndexState(ctx, r.store, r.config.Version, r.Logger())
	if err != nil {
		return report, fmt.Errorf("gc: %w", err)
	}
	garbage, err := loadGarbage(ctx, r.store)
	if err != nil {
		return report, fmt.Errorf("gc: %w (nothing was removed)", err)
	}
	deferred := map[ID]bool{} // packs earlier GCs left in place for readers
	for _, g := range garbage {
		for _, id := range g.Packs {
			deferred[id] = true
		}
	}
	recovered := map[ID]bool{}
	for _, id := range state.recovered {
		recovered[id] = true
	}
	idx := state.idx
	// Mark and repack read through the index just loaded.
	r.setIndex(idx)

	used := map[ID]bool{}
	points, damaged, err := r.mark(ctx, opts, func(_ context.Context, id ID) error {
		used[id] = true
		return nil
	})
	if err != nil {
		return report, fmt.Errorf("gc: mark: %w (nothing was removed)", err)
	}
	report.DamagedManifests = damaged
	report.RestorePoints, report.LiveBlobs = points, len(used)
	missing := 0
	for id := range used {
		if _, _, ok := idx.lookup(id); !ok {
			missing++ // in no index file and no readable pack header
		}
	}

	// A blob is live in a pack when a restore point uses it and the index
	// serves it from that pack; other copies (two creates that stored the
	// same new blob at once) are dead weight.
	liveIn := func(pack ID, e packEntry) bool {
		loc, servedFrom, ok := idx.lookup(e.ID)
		return ok && used[e.ID] && servedFrom == pack && loc.offset == e.Offset
	}
	var keep []indexedPack
	var drop []ID
	var repack []indexedPack
	for packID, size := range state.stored {
		report.BytesBefore += size
		entries, ok := state.entries[packID]
		if deferred[packID] && (!ok || recovered[packID]) && !slices.ContainsFunc(entries, func(e packEntry) bool { return liveIn(packID, e) }) {
			// Left in place for readers by an earlier GC; sweep deletes it
			// when they are done. One that serves a live blob no index file
			// lists (a create deduplicated against its recovered entries)
			// is needed again, and is sorted like any other pack below.
			report.BytesAfter += size
			continue
		}
		if !ok {
			// No index lists it and its header is unreadable. If live blobs
			// are missing it may hold them: keep it for a repair.
			if missing > 0 {
				report.BytesAfter += size
				continue
			}
			report.UnindexedPacks++
			drop = append(drop, packID)
			continue
		}
		var deadBytes int64
		live := 0
		for _, e := range entries {
			if liveIn(packID, e) {
				live++
			} else {
				deadBytes += int64(e.Length) + packEntrySize
			}
		}
		switch {
		case live == 0 && slices.Contains(state.recovered, packID):
			drop = append(drop, packID) // no index lists it: a failed create's
			report.UnindexedPacks++
		case live == 0:
			drop = append(drop, packID)
			report.PacksDeleted++
			report.BlobsRemoved += len(entries)
		case float64(deadBytes) > opts.RepackUnused*float64(size):
			repack = append(repack, indexedPack{ID: packID, Entries: entries})
			report.PacksRepacked++
			report.BlobsRemoved += len(entries) - live
		default:
			keep = append(keep, indexedPack{ID: packID, Entries: indexedAfterGC(packID, entries, liveIn)})
			report.BytesAfter += size
		}
	}
	// A pack the index names but the store lacks is damage for Verify to
	// report, not garbage: keep its entries if they are live.
	for packID, entries := range state.entries {
		if _, ok := state.stored[packID]; ok {
			continue
		}
		if slices.ContainsFunc(entries, func(e packEntry) bool { return used[e.ID] }) {
			if listed := indexedAfterGC(packID, entries, liveIn); len(listed) > 0 {
				keep = append(keep, indexedPack{ID: packID, Entries: listed})
			}
		}
	}
	indexNames := state.files
	if opts.DryRun {
		for _, p := range repack {
			for _, e := range p.Entries {
				if liveIn(p.ID, e) {
					report.BytesAfter += int64(e.Length)
				}
			}
		}
		report.IndexFiles = len(indexNames)
		return report, nil
	}
	// Garbage that no index lists goes first, to free space on a full disk,
	// unless a reader may read it through an index that recovered it.
	if err := lock.stillHeld(ctx); err != nil {
		return report, fmt.Errorf("gc: %w (nothing was removed)", err)
	}
	readers, err := liveReaders(ctx, r.store)
	if err != nil {
		return report, fmt.Errorf("gc: %w (nothing was removed)", err)
	}
	for _, id := range drop {
		if _, indexed := state.entries[id]; len(readers) == 0 && (!indexed || recovered[id]) {
			if err := r.store.Delete(ctx, packName(id)); err != nil && !errors.Is(err, ErrNotFound) {
				return report, fmt.Errorf("gc: %w", err)
			}
		}
	}

	// Copy the live blobs of packs worth repacking into new packs. A pack
	// with a damaged live blob is kept as it is, so that Verify still
	// reports the damage and a repair can still find the rest.
	w := &Writer{repo: r, pending: map[ID]struct{}{}, repacking: true}
	var repackTotal, repacked int64
	for _, p := range repack {
		for _, e := range p.Entries {
			if liveIn(p.ID, e) {
				repackTotal += int64(e.Length)
			}
		}
	}
	for _, p := range repack {
		opts.report("repack", repacked, repackTotal)
		var blobs [][]byte
		var damaged bool
		var live []packEntry
		for _, e := range p.Entries {
			if liveIn(p.ID, e) {
				live = append(live, e)
			}
		}
		for _, e := range live {
			data, err := r.ReadBlob(ctx, e.Type, e.ID, nil)
			if errors.Is(err, ErrCorrupt) {
				damaged = true
				break
			}
			if err != nil {
				w.Close()
				return report, fmt.Errorf("gc: repack: %w (nothing was removed)", err)
			}
			blobs = append(blobs, data)
		}
		if damaged {
			keep = append(keep, p)
			report.PacksRepacked--
			report.BytesAfter += state.stored[p.ID]
			continue
		}
		for i, e := range live {
			if _, err := w.PutBlob(ctx, e.Type, e.ID, blobs[i]); err != nil {
				w.Close()
				return report, fmt.Errorf("gc: repack: %w", err)
			}
			repacked += int64(e.Length)
		}
		drop = append(drop, p.ID)
	}
	if err := w.flushPacks(ctx); err != nil {
		w.Close()
		return report, fmt.Errorf("gc: repack: %w", err)
	}
	for _, p := range w.written {
		report.PacksWritten++
		keep = append(keep, p)
		report.BytesAfter += packSize(p.Entries)
	}
	w.Close()

	// Commit: the new index first, then remove the old indexes, then packs.
	// A crash before the new index is durable leaves the old state; a crash
	// after it leaves duplicates and garbage that the next GC removes.
	if err := lock.stillHeld(ctx); err != nil {
		return report, fmt.Errorf("gc: %w", err)
	}
	if report.IndexFiles, err = r.replaceIndex(ctx, keep, indexNames); err != nil {
		return report, fmt.Errorf("gc: %w", err)
	}
	if err := lock.stillHeld(ctx); err != nil {
		return report, fmt.Errorf("gc: %w", err)
	}
	kept := map[ID]bool{}
	for _, p := range keep {
		kept[p.ID] = true
	}
	var dropped []ID
	for _, id := range drop {
		// Packs are named by content: a repack that reproduced a pack byte
		// for byte wrote it under the same name. It stays.
		if !kept[id] {
			dropped = append(dropped, id)
		}
	}
	if len(repack) > 0 {
		opts.report("repack", repackTotal, repackTotal)
	}
	if err := r.sweep(ctx, &report, state, dropped, garbage, kept, missing > 0, opts); err != nil {
		return report, fmt.Errorf("gc: %w", err)
	}
	return report, nil
}

// indexedAfterGC returns the entries of a pack GC keeps that the new index
// lists: every data blob (its bytes stay, so a create may deduplicate
// against it), but only the live tree nodes. A dead tree node stays in the
// pack, unlisted: the packs of the nodes and chunks under it may go in this
// very GC, and a tree node in the index promises its whole subtree to a
// copy (see Copier). Its bytes count as dead only once the whole pack is.
func indexedAfterGC(pack ID, entries []packEntry, liveIn func(ID, packEntry) bool) []packEntry {
	var listed []packEntry
	for _, e := range entries {
		if e.Type == DataBlob || liveIn(pack, e) {
			listed = append(listed, e)
		}
	}
	return listed
}

// sweep deletes the packs GC dropped and those earlier GCs deferred, once
// no live reader may read them. It runs after the new index is durable and
// the old index files are gone, so a reader whose lock appears after it
// lists the locks loads an index without the dropped packs. Packs a live
// reader may still read through an older index stay, recorded in a
// garbage record for a later GC. A recorded pack is not deleted if it is
// indexed again (kept), dropped anew, or, while live blobs are missing
// (keepUnreadable), if its header cannot be read: it may hold them.
func (r *Repository) sweep(ctx context.Context, report *GCReport, state *indexState, dropped []ID, garbage map[string]garbageRecord, kept map[ID]bool, keepUnreadable bool, opts GCOptions) error {
	readers, err := liveReaders(ctx, r.store)
	if err != nil {
		return err
	}
	deferredNow := map[ID]bool{} // packs this sweep deferred or deleted
	if len(readers) > 0 && len(dropped) > 0 {
		if _, err := writeGarbage(ctx, r.store, dropped); err != nil {
			return err
		}
		report.PacksDeferred = len(dropped)
		for _, id := range dropped {
			report.BytesAfter += state.stored[id]
			deferredNow[id] = true
		}
		dropped = nil
	}
	for i, id := range dropped {
		opts.report("delete", int64(i), int64(len(dropped)))
		if err := r.store.Delete(ctx, packName(id)); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		deferredNow[id] = true // dealt with: not counted again below
	}
	if len(dropped) > 0 {
		opts.report("delete", int64(len(dropped)), int64(len(dropped)))
	}
	names := make([]string, 0, len(garbage))
	for name := range garbage {
		names = append(names, name)
	}
	sort.Strings(names) // oldest first
	for _, name := range names {
		g := garbage[name]
		if !g.reapable(readers) {
			continue
		}
		for _, id := range g.Packs {
			if kept[id] || deferredNow[id] || keepUnreadable && state.unreadable[id] != nil {
				continue
			}
			if err := r.store.Delete(ctx, packName(id)); err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			report.GarbagePacksDeleted++
			report.BytesAfter -= state.stored[id]
		}
		if err := r.store.Delete(ctx, name); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return nil
}

// mark calls use for every blob reachable from a manifest or a live
// reader's root (more than once for some), and returns how many manifests
// there are. It reads every manifest object itself (ListManifests
// leaves damaged ones out): a damaged manifest is an error naming it, since
// the chunks only it needs would otherwise be swept and the point lost for
// good; with ignoreDamaged it is treated as deleted and returned in damaged. Any unreadable tree node is an
// error too: a sweep after an incomplete mark could delete live data.
func (r *Repository) mark(ctx context.Context, opts GCOptions, use func(context.Context, ID) error) (points int, damaged []string, err error) {
	ignoreDamaged := opts.IgnoreDamaged
	seen := map[ID]bool{}
	names, err := listNames(ctx, r.store, manifestPrefix)
	if err != nil {
		return 0, nil, fmt.Errorf("list restore points: %w", err)
	}
	sort.Strings(names)
	for i, name := range names {
		opts.report("mark", int64(i), int64(len(names)))
		m, err := r.readManifest(ctx, name)
		if errors.Is(err, ErrNotFound) {
			continue // deleted while we listed
		}
		if err != nil && ignoreDamaged && errors.Is(err, ErrCorrupt) {
			r.Logger().Warn("gc: damaged restore point treated as deleted", "object", name, "error", err)
			damaged = append(damaged, name)
			continue
		}
		if errors.Is(err, ErrCorrupt) {
			return 0, nil, fmt.Errorf("manifest %s is damaged, so what it needs is unknown (if it cannot be put back from a copy, gc -ignore-damaged treats it as deleted): %w", name, err)
		}
		if err != nil {
			return 0, nil, fmt.Errorf("manifest %s cannot be read, so what it needs is unknown: %w", name, err)
		}
		points++
		if !m.Config.IsZero() {
			if err := use(ctx, m.Config); err != nil {
				return 0, nil, err
			}
		}
		for _, d := range m.Disks {
			err := r.walkForMark(ctx, d, seen, func(id ID, level int, ids []ID) error {
				if err := use(ctx, id); err != nil {
					return err
				}
				if level == 0 {
					for _, b := range ids {
						if !b.IsZero() {
							if err := use(ctx, b); err != nil {
								return err
							}
						}
					}
				}
				return nil
			})
			if err != nil {
				return 0, nil, fmt.Errorf("restore point %s/%s disk %s: %w", m.Collection, m.ID, d.Name, err)
			}
		}
	}
	opts.report("mark", int64(len(names)), int64(len(names)))
	// Then the roots of live readers, after the manifests: a reader whose
	// lock is not visible yet re-reads its manifest after writing the lock,
	// and so was opening a manifest that this mark has read.
	readers, err := liveReaders(ctx, r.store)
	if err != nil {
		return 0, nil, err
	}
	for _, reader := range readers {
		for _, root := range reader.Roots {
			if err := r.markRoot(ctx, root, use, seen); err != nil {
				return 0, nil, fmt.Errorf("root %s of %s: %w", root, reader, err)
			}
		}
	}
	return points, damaged, nil
}

// flushPacks writes the open packs without writing an index file.
func (w *Writer) flushPacks(ctx context.Context) error {
	w.writes.Wait()
	for t, p := range w.open {
		if p != nil {
			w.open[t] = nil
			if err := w.writePack(ctx, p); err != nil {
				return err
			}
		}
	}
	return w.err
}

func packSize(entries []packEntry) int64 {
	n := int64(len(entries)*packEntrySize + packTrailerSize)
	for _, e := range entries {
		n += int64(e.Length)
	}
	return n
}

// listPacks returns the stored packs and their sizes.
func listPacks(ctx context.Context, store Store) (map[ID]int64, error) {
	packs := map[ID]int64{}
	err := store.List(ctx, "packs/", func(info ObjectInfo) error {
		id, err := ParseID(info.Name[strings.LastIndex(info.Name, "/")+1:])
		if err != nil || packName(id) != info.Name {
			return nil // not a pack of ours; leave it alone
		}
		packs[id] = info.Size
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list packs: %w", err)
	}
	return packs, nil
}

// tempRemover is a store that can clear what interrupted writes left
// behind (LocalStore.RemoveTemp).
type tempRemover interface {
	RemoveTemp(context.Context) (int, error)
}

// findStore looks for a store of kind T in store or, through Unwrap, the
// stores it decorates (a RetryStore over a LocalStore).
func findStore[T any](store Store) (T, bool) {
	for store != nil {
		if found, ok := store.(T); ok {
			return found, true
		}
		unwrapper, ok := store.(interface{ Unwrap() Store })
		if !ok {
			break
		}
		store = unwrapper.Unwrap()
	}
	var none T
	return none, false
}
