package chain

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"

	"github.com/zeebo/blake3"
	"golang.org/x/sync/errgroup"
)

// indexV2Marks is what GC's mark keeps in a version 2 repository: a bit
// per entry of each index file (set at the position of the entry that
// serves a live blob), and, for the blobs only recovered packs hold, a set
// of IDs (few: recovered packs are the rare leftovers of failed creates or
// deferred GCs). Its memory is an eighth of a byte per entry, not a map of
// every live blob, plus one batch of IDs: use collects the IDs it is
// given, and each batch is looked up sorted, a file at a time, so that a
// bucket is read once per batch rather than once per blob.
type indexV2Marks struct {
	set     *indexV2Set
	files   []*indexV2Reader
	bits    [][]uint64
	overlay map[ID]bool // live blobs the overlay serves
	live    int         // distinct live blobs
	missing int         // live blobs no file or pack lists
	pending []ID        // IDs given to use and not yet looked up
}

// indexV2MarkBatch is how many IDs GC's mark looks up at once: 8 MiB of
// IDs, whatever the repository holds. A batch reads the index through
// about once; at a million blobs it asks 16 IDs a bucket (a bucket is 64
// entries), where a lookup per ID reads a bucket per ID.
var indexV2MarkBatch = 1 << 18

func newIndexV2Marks(x *indexV2Set) *indexV2Marks {
	m := &indexV2Marks{set: x, files: x.files, overlay: map[ID]bool{}}
	m.bits = make([][]uint64, len(x.files))
	for i, f := range x.files {
		m.bits[i] = make([]uint64, (f.count+63)/64)
	}
	return m
}

// use marks blob id as live where the index serves it from, once the
// batch it joins is looked up (flush).
func (m *indexV2Marks) use(ctx context.Context, id ID) error {
	if m.pending == nil {
		entries := len(m.set.overlay)
		for _, f := range m.files {
			entries += f.count
		}
		m.pending = make([]ID, 0, min(indexV2MarkBatch, entries+1))
	}
	m.pending = append(m.pending, id)
	if len(m.pending) >= indexV2MarkBatch {
		return m.flush(ctx)
	}
	return nil
}

// flush looks up the IDs use collected and marks them.
func (m *indexV2Marks) flush(ctx context.Context) error {
	ids := sortIDs(m.pending)
	left, err := lookupBatchIn(ctx, m.files, ids, func(_ ID, file, pos int, _ indexEntry) error {
		if !m.marked(file, pos) {
			m.bits[file][pos/64] |= 1 << (pos % 64)
			m.live++
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range left {
		if _, ok := m.set.overlay[id]; ok {
			if !m.overlay[id] {
				m.overlay[id] = true
				m.live++
			}
			continue
		}
		m.missing++
	}
	m.pending = m.pending[:0]
	return nil
}

func (m *indexV2Marks) marked(file, pos int) bool { return m.bits[file][pos/64]&(1<<(pos%64)) != 0 }

// liveInOverlay reports whether e, an entry of recovered pack pack, is the
// copy of a live blob that the overlay serves.
func (m *indexV2Marks) liveInOverlay(pack ID, e packEntry) bool {
	served, ok := m.set.overlay[e.ID]
	return ok && m.overlay[e.ID] && served.Pack == pack && served.Offset == e.Offset
}

// packTally is what GC's sweep needs of a pack: how many entries the index
// lists in it and how many of them are live, and their bytes.
type packTally struct {
	entries, live        int
	deadBytes, liveBytes int64
}

func (t *packTally) add(e packEntry, live bool) {
	t.entries++
	if live {
		t.live++
		t.liveBytes += int64(e.Length)
	} else {
		t.deadBytes += int64(e.Length) + packEntrySize
	}
}

// loadIndexV2Checked loads the index and reads every file through once, so
// that a file damaged past its tables (a bucket's checksum) is taken for
// damaged, its packs recovered from their headers, before GC or verify
// relies on it. With checkNames, each file's bytes are also checked
// against its name. It returns why each damaged file is damaged.
func (r *Repository) loadIndexV2Checked(ctx context.Context, checkNames bool) (*indexV2Set, map[string]error, error) {
	exclude := map[string]bool{}
	reasons := map[string]error{}
	gone := 0 // loads that found a file gone
	for {
		x, err := loadIndexV2Set(ctx, r.store, r.Logger(), exclude)
		if err != nil {
			return nil, nil, err
		}
		bad, again := "", false
		for _, f := range x.files {
			err := f.iterate(ctx, func(int, indexEntry) error { return nil })
			if err == nil && checkNames {
				err = checkIndexV2Name(ctx, f)
			}
			if errors.As(err, new(*CorruptError)) {
				r.Logger().Warn("damaged index file; its packs are read from their own headers", "object", f.name, "error", err)
				bad, reasons[f.name] = f.name, err
				break
			}
			if errors.Is(err, ErrNotFound) && gone < maxIndexLoads {
				// A compaction elsewhere replaced it (verify runs beside
				// writers): load again.
				gone++
				again = true
				break
			}
			if err != nil {
				return nil, nil, err
			}
		}
		if again {
			continue
		}
		// Verify's lookups run beside compactions: a listing that raced
		// one may have seen neither its inputs nor its output, so a miss
		// re-lists before it is believed. (GC's exclude writers.)
		x.relistOnMiss = checkNames
		if bad == "" {
			for name, err := range x.openErrs {
				reasons[name] = err
			}
			return x, reasons, nil
		}
		exclude[bad] = true
	}
}

// checkIndexV2Name reads f's file through, a piece at a time, and checks
// it against its name.
func checkIndexV2Name(ctx context.Context, f *indexV2Reader) error {
	h := blake3.New()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < f.layout.size; {
		n := min(int64(len(buf)), f.layout.size-off)
		if err := f.src.ReadAt(ctx, buf[:n], off); err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
		h.Write(buf[:n])
		off += n
	}
	var id ID
	copy(id[:], h.Sum(nil))
	if indexPrefix+id.String() != f.name {
		return corrupt(f.name, "content does not match its name")
	}
	return nil
}

// gcV2 is GC of a version 2 repository, under the lock GC took. It follows
// GC's rules (see GC, sweep and indexedAfterGC) with memory bounded by
// what it keeps per index file and per pack, not per blob: the mark is a
// bitmap over index positions (indexV2Marks), the sweep decides each pack
// from a tally of its entries, and the new index is a streaming merge of
// the old files (mergeIndexV2At) that keeps the live entries of the packs
// that stay, plus files for the repacked and recovered packs.
func (r *Repository) gcV2(ctx context.Context, lock *repoLock, opts GCOptions, report *GCReport) error {
	x, _, err := r.loadIndexV2Checked(ctx, false)
	if err != nil {
		return err
	}
	stored, err := listPacks(ctx, r.store)
	if err != nil {
		return err
	}
	garbage, err := loadGarbage(ctx, r.store)
	if err != nil {
		return fmt.Errorf("%w (nothing was removed)", err)
	}
	deferred := map[ID]bool{} // packs earlier GCs left in place for readers
	for _, g := range garbage {
		for _, id := range g.Packs {
			deferred[id] = true
		}
	}
	// Mark and repack read through the index just loaded.
	r.setIndex(x)

	marks := newIndexV2Marks(x)
	points, damaged, err := r.mark(ctx, opts, marks.use)
	if err == nil {
		err = marks.flush(ctx)
	}
	if err != nil {
		return fmt.Errorf("mark: %w (nothing was removed)", err)
	}
	report.DamagedManifests = damaged
	report.RestorePoints, report.LiveBlobs = points, marks.live
	missing := marks.missing

	tally := map[ID]*packTally{}
	tallyOf := func(pack ID) *packTally {
		t := tally[pack]
		if t == nil {
			t = &packTally{}
			tally[pack] = t
		}
		return t
	}
	for i, f := range x.files {
		err := f.iterate(ctx, func(pos int, e indexEntry) error {
			live := marks.marked(i, pos)
			if !live && i > 0 {
				// The same entry listed again by a later file (a compaction
				// killed, or racing another, left its inputs beside its
				// output) is neither live nor dead weight: not counted.
				dup, err := servedSame(ctx, x.files[:i], e)
				if err != nil || dup {
					return err
				}
			}
			tallyOf(e.Pack).add(e.packEntry, live)
			return nil
		})
		if err != nil {
			return fmt.Errorf("%w (nothing was removed)", err)
		}
	}
	for pack, entries := range x.recoveredEntries {
		t := tallyOf(pack)
		for _, e := range entries {
			t.add(e, marks.liveInOverlay(pack, e))
		}
	}

	kept := map[ID]bool{}   // packs the new index lists
	repack := map[ID]bool{} // packs whose live blobs move to new packs
	var drop []ID
	for packID, size := range stored {
		report.BytesBefore += size
		t, ok := tally[packID]
		if deferred[packID] && (!ok || x.recovered[packID]) && (!ok || t.live == 0) {
			report.BytesAfter += size // sweep deletes it when readers are done
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
		switch {
		case t.live == 0 && x.recovered[packID]:
			drop = append(drop, packID) // no index lists it: a failed create's
			report.UnindexedPacks++
		case t.live == 0:
			drop = append(drop, packID)
			report.PacksDeleted++
			report.BlobsRemoved += t.entries
		case float64(t.deadBytes) > opts.RepackUnused*float64(size):
			repack[packID] = true
			report.PacksRepacked++
			report.BlobsRemoved += t.entries - t.live
		default:
			kept[packID] = true
			report.BytesAfter += size
		}
	}
	// A pack the index names but the store lacks is damage for Verify to
	// report, not garbage: its live entries stay listed.
	for packID, t := range tally {
		if _, ok := stored[packID]; !ok && t.live > 0 {
			kept[packID] = true
		}
	}
	if opts.DryRun {
		for packID := range repack {
			report.BytesAfter += tally[packID].liveBytes
		}
		report.IndexFiles = len(x.files) + len(x.damaged)
		return nil
	}
	if err := lock.lost(); err != nil {
		return fmt.Errorf("%w (nothing was removed)", err)
	}
	readers, err := liveReaders(ctx, r.store)
	if err != nil {
		return fmt.Errorf("%w (nothing was removed)", err)
	}
	for _, id := range drop {
		if _, indexed := tally[id]; len(readers) == 0 && (!indexed || x.recovered[id]) {
			if err := r.store.Delete(ctx, packName(id)); err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
		}
	}

	written, err := r.repackV2(ctx, x, marks, repack, stored, kept, report, opts)
	if err != nil {
		return err
	}
	for id := range repack {
		if !kept[id] {
			drop = append(drop, id)
		}
	}
	for _, p := range written {
		report.PacksWritten++
		kept[p.ID] = true
		report.BytesAfter += packSize(p.Entries)
	}

	// Commit: the new index files first, then remove the old ones, then
	// packs (see GC).
	if err := lock.lost(); err != nil {
		return err
	}
	newPacks := written
	for pack, entries := range x.recoveredEntries {
		if !kept[pack] {
			continue
		}
		var listed []packEntry
		for _, e := range entries {
			if e.Type == DataBlob || marks.liveInOverlay(pack, e) {
				listed = append(listed, e)
			}
		}
		newPacks = append(newPacks, indexedPack{ID: pack, Entries: listed})
	}
	files, err := writeIndexV2Files(ctx, r.store, newPacks)
	if err != nil {
		return err
	}
	_, err = mergeIndexV2At(ctx, x.files, func(input, pos int, e indexEntry) bool {
		return kept[e.Pack] && (e.Type == DataBlob || marks.marked(input, pos))
	}, 0, func(ctx context.Context, file []byte) error {
		f, err := putIndexV2File(ctx, r.store, file)
		if err == nil {
			files = append(files, f)
		}
		return err
	})
	if err != nil {
		return err
	}
	old := append([]string(nil), x.damaged...)
	for _, f := range x.files {
		old = append(old, f.name)
	}
	isNew := map[string]bool{}
	for _, f := range files {
		isNew[f.name] = true
	}
	for _, name := range old {
		if isNew[name] {
			continue
		}
		if err := r.store.Delete(ctx, name); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		report.IndexFiles++
	}
	fresh := newIndexV2Set()
	if err := fresh.addWritten(ctx, r.store, files); err != nil {
		return err
	}
	r.setIndex(fresh)

	if err := lock.lost(); err != nil {
		return err
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
		var total int64
		for id := range repack {
			total += tally[id].liveBytes
		}
		opts.report("repack", total, total)
	}
	state := &indexState{stored: stored, unreadable: x.unreadable}
	return r.sweep(ctx, report, state, dropped, garbage, kept, missing > 0, opts)
}

// repackV2 copies the live blobs of the packs in repack into new packs and
// returns them. A pack with a damaged live blob is kept as it is (added
// to kept), so that Verify still reports the damage and a repair can
// still find the rest. What it holds is the live entries of the packs it
// repacks, not of the index.
func (r *Repository) repackV2(ctx context.Context, x *indexV2Set, marks *indexV2Marks, repack map[ID]bool, stored map[ID]int64, kept map[ID]bool, report *GCReport, opts GCOptions) ([]indexedPack, error) {
	if len(repack) == 0 {
		return nil, nil
	}
	live := map[ID][]packEntry{}
	for i, f := range x.files {
		err := f.iterate(ctx, func(pos int, e indexEntry) error {
			if repack[e.Pack] && marks.marked(i, pos) {
				live[e.Pack] = append(live[e.Pack], e.packEntry)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("repack: %w (nothing was removed)", err)
		}
	}
	for pack, entries := range x.recoveredEntries {
		if repack[pack] {
			for _, e := range entries {
				if marks.liveInOverlay(pack, e) {
					live[pack] = append(live[pack], e)
				}
			}
		}
	}
	var total, done int64
	for _, entries := range live {
		for _, e := range entries {
			total += int64(e.Length)
		}
	}
	w := &Writer{repo: r, pending: map[ID]struct{}{}, repacking: true}
	defer w.Close()
	for pack := range repack {
		opts.report("repack", done, total)
		var blobs [][]byte
		damaged := false
		for _, e := range live[pack] {
			data, err := r.ReadBlob(ctx, e.Type, e.ID, nil)
			if errors.Is(err, ErrCorrupt) {
				damaged = true
				break
			}
			if err != nil {
				return nil, fmt.Errorf("repack: %w (nothing was removed)", err)
			}
			blobs = append(blobs, data)
		}
		if damaged {
			kept[pack] = true
			report.PacksRepacked--
			report.BytesAfter += stored[pack]
			continue
		}
		for i, e := range live[pack] {
			if _, err := w.PutBlob(ctx, e.Type, e.ID, blobs[i]); err != nil {
				return nil, fmt.Errorf("repack: %w", err)
			}
			done += int64(e.Length)
		}
	}
	if err := w.flushPacks(ctx); err != nil {
		return nil, fmt.Errorf("repack: %w", err)
	}
	return w.written, nil
}

// walkForMark is TreeReader.WalkNodes for GC's mark: in a version 2
// repository the nodes are read a level at a time, in parallel and in
// batches per pack (walkNodesByPack); version 1 walks as it always has.
func (r *Repository) walkForMark(ctx context.Context, d DiskManifest, seen map[ID]bool, fn func(id ID, level int, ids []ID) error) error {
	t := r.OpenTree(d)
	x, ok := r.index().(*indexV2Set)
	if r.config.Version != FormatVersion2 || !ok {
		return t.WalkNodes(ctx, seen, fn)
	}
	return t.walkNodesByPack(ctx, x, seen, fn)
}

// markNodeWindow is how many nodes of a level the mark reads at once: a
// window of leaves names up to 1024 × fanout chunks, which it hands to fn
// before it reads the next.
var markNodeWindow = 1024

// placedNode is a tree node and its place: its number n in its level.
type placedNode struct {
	id ID
	n  int64
}

// walkNodesByPack calls fn for every stored node of the block map, as
// WalkNodes does (skipping zero subtrees and nodes in seen, to which it
// adds those it visits), but breadth first: each level's nodes, a window
// at a time, are looked up in one sorted batch, grouped by the pack that
// holds them, and read on up to GOMAXPROCS goroutines, a pack each, in
// the order of their offsets; fn then sees them one at a time. A node that
// cannot be read is an error, as in WalkNodes.
func (t *TreeReader) walkNodesByPack(ctx context.Context, x *indexV2Set, seen map[ID]bool, fn func(id ID, level int, ids []ID) error) error {
	level := t.g.Height()
	nodes := []placedNode{{id: t.root}}
	for ; level >= 0 && len(nodes) > 0; level-- {
		var next []placedNode
		for len(nodes) > 0 {
			window := nodes[:min(len(nodes), markNodeWindow)]
			nodes = nodes[len(window):]
			var todo []placedNode
			for _, p := range window {
				if !p.id.IsZero() && !seen[p.id] {
					seen[p.id] = true
					todo = append(todo, p)
				}
			}
			read, err := t.readNodesByPack(ctx, x, todo, level)
			if err != nil {
				return err
			}
			for i, p := range todo {
				if err := fn(p.id, level, read[i]); err != nil {
					return err
				}
				if level > 0 {
					for j, child := range read[i] {
						next = append(next, placedNode{id: child, n: p.n*int64(t.g.Fanout) + int64(j)})
					}
				}
			}
		}
		nodes = next
	}
	return nil
}

// readNodesByPack reads the nodes of level in todo, grouped by pack and in
// parallel, and returns their IDs in todo's order.
func (t *TreeReader) readNodesByPack(ctx context.Context, x *indexV2Set, todo []placedNode, level int) ([][]ID, error) {
	read := make([][]ID, len(todo))
	ids := make([]ID, len(todo))
	for i, p := range todo {
		ids[i] = p.id
	}
	where := map[ID]indexEntry{}
	x.mu.RLock()
	files := x.files
	x.mu.RUnlock()
	if _, err := lookupBatchIn(ctx, files, sortIDs(ids), func(id ID, _, _ int, e indexEntry) error {
		where[id] = e
		return nil
	}); err != nil {
		clear(where) // read through the index one by one instead
	}
	byPack := map[ID][]int{} // pack → numbers in todo; the zero pack: not found
	for i, p := range todo {
		pack := where[p.id].Pack
		byPack[pack] = append(byPack[pack], i)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for _, group := range byPack {
		slices.SortFunc(group, func(a, b int) int {
			return cmp.Compare(where[todo[a].id].Offset, where[todo[b].id].Offset)
		})
		g.Go(func() error {
			for _, i := range group {
				nodeIDs, err := t.nodeAt(gctx, todo[i], level, where)
				if err != nil {
					return err
				}
				read[i] = nodeIDs
			}
			return nil
		})
	}
	return read, g.Wait()
}

// nodeAt is TreeReader.node reading where the batch found the node, when
// it did (a node found nowhere, or not where the batch said, is read
// through the index, which reports what is wrong).
func (t *TreeReader) nodeAt(ctx context.Context, p placedNode, level int, where map[ID]indexEntry) ([]ID, error) {
	e, ok := where[p.id]
	if !ok || e.Type != TreeBlob {
		return t.node(ctx, p.id, level, p.n, false)
	}
	data, err := t.repo.readBlobAt(ctx, e.Pack, e.packEntry, nil)
	if err != nil {
		return t.node(ctx, p.id, level, p.n, false)
	}
	gotLevel, ids, err := decodeTreeNode(nil, data)
	if err != nil || gotLevel != level || len(ids) != t.g.entries(level, p.n) {
		return t.node(ctx, p.id, level, p.n, false) // and reports it
	}
	return ids, nil
}

// servedSame reports whether a file of before lists e's blob in e's pack
// at e's offset: the first that lists it serves it from exactly there.
func servedSame(ctx context.Context, before []*indexV2Reader, e indexEntry) (bool, error) {
	for _, f := range before {
		served, _, ok, err := f.lookup(ctx, e.ID)
		if err != nil || ok {
			return ok && served.Pack == e.Pack && served.Offset == e.Offset, err
		}
	}
	return false, nil
}
