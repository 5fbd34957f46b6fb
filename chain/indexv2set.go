package chain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"
)

// indexV2Set is the index of a version 2 repository: a reader per index
// file, each holding only its file's small tables (about 1.4 bytes per
// entry) and reading a bucket per lookup, plus an overlay of the blobs of
// packs that no index file lists, recovered from their own headers (a
// failed create's, or packs a GC left for readers). The blobs a writer of
// this process stored but has not indexed yet are the writer's (its
// pending set), as in version 1. So the Go heap it holds does not grow
// with the number of blobs, only with the number of files and recovered
// blobs. It is safe for concurrent use.
type indexV2Set struct {
	mu    sync.RWMutex
	files []*indexV2Reader // in load order: the first that lists a blob serves it
	names map[string]bool  // the index objects in files
	// overlay: blobs of recovered packs, served after the files'.
	overlay map[ID]indexEntry
	// recovered: the packs of the overlay. Refresh checks that they still
	// exist, since a GC may delete them without changing any index file.
	recovered map[ID]bool
	// recoveredEntries: every entry of each recovered pack, as its header
	// lists it (the overlay holds only the first copy of a blob), for GC.
	recoveredEntries map[ID][]packEntry
	// damaged: index files that did not open, or that were set aside;
	// unreadable: unindexed packs whose header is damaged. For GC.
	damaged    []string
	openErrs   map[string]error // why each damaged file that was opened did not open
	unreadable map[ID]error
	// setAside: index files that opened but were found damaged past their
	// tables (a bucket), and are left out of this index and its refreshes.
	setAside map[string]bool

	gen      uint64 // see index.gen
	unloaded bool   // see index.unloaded

	// store and log are where the files are and where to warn, for
	// re-listing when a file the set opened is gone: a compaction (or a
	// GC) elsewhere replaced it by files that list its entries. Nil for
	// a set built in memory, which never re-lists.
	store Store
	log   *slog.Logger
	// relistMu serialises re-listings; relists counts them, so that the
	// lookups that all found the same file gone re-list once.
	relistMu sync.Mutex
	relists  uint64
	// relistOnMiss: a miss re-lists the index files and looks in the new
	// ones before it is believed. Verify's: a listing that raced a
	// compaction may have seen neither the inputs nor the merged file.
	relistOnMiss bool
	// counts: entries by pack, once packCounts has counted them.
	counts map[ID]int
	// compacting is held while a writer of this process compacts.
	compacting sync.Mutex
}

func newIndexV2Set() *indexV2Set {
	return &indexV2Set{names: map[string]bool{}, overlay: map[ID]indexEntry{}, recovered: map[ID]bool{}, recoveredEntries: map[ID][]packEntry{}, unreadable: map[ID]error{}, gen: indexGeneration.Add(1)}
}

// newUnloadedIndexV2Set is the index of a version 2 repository whose index
// files have not been read yet (see newUnloadedIndex).
func newUnloadedIndexV2Set() *indexV2Set {
	x := newIndexV2Set()
	x.gen, x.unloaded = 0, true
	return x
}

func (x *indexV2Set) generation() uint64 { return x.gen }

func (x *indexV2Set) isUnloaded() bool { return x.unloaded }

func (x *indexV2Set) find(ctx context.Context, id ID) (packEntry, ID, bool, error) {
	e, ok, err := x.lookupFiles(ctx, id)
	if err != nil || ok {
		return e.packEntry, e.Pack, ok, err
	}
	x.mu.RLock()
	e, ok = x.overlay[id]
	x.mu.RUnlock()
	return e.packEntry, e.Pack, ok, nil
}

// findBatch looks ids up in the files in one sorted batch
// (lookupBatchIn) and returns what they list, as find's lookup of each in
// the files would: the first file that lists an ID serves it. What is not
// in the map (in the overlay, in a file added since, or all of them if the
// batch failed: a file gone, a read error) the caller looks up with find,
// which knows what to do about each. Nil for fewer than two IDs.
func (x *indexV2Set) findBatch(ctx context.Context, ids []ID) map[ID]indexEntry {
	sorted := make([]ID, 0, len(ids))
	for _, id := range ids {
		if !id.IsZero() {
			sorted = append(sorted, id)
		}
	}
	if len(sorted) < 2 {
		return nil
	}
	sorted = sortIDs(sorted)
	x.mu.RLock()
	files := x.files
	x.mu.RUnlock()
	found := make(map[ID]indexEntry, len(sorted))
	_, err := lookupBatchIn(ctx, files, sorted, func(id ID, _, _ int, e indexEntry) error {
		found[id] = e
		return nil
	})
	if err != nil {
		return nil
	}
	return found
}

// holds is find that counts a tree node only when an index file lists it
// (see index.has): one known only from a recovered pack's header is
// readable, but promises nothing about what is under it.
func (x *indexV2Set) holds(ctx context.Context, id ID) (bool, error) {
	_, ok, err := x.lookupFiles(ctx, id)
	if err != nil || ok {
		return ok, err
	}
	x.mu.RLock()
	e, ok := x.overlay[id]
	x.mu.RUnlock()
	return ok && e.Type != TreeBlob, nil
}

// lookupFiles looks id up in the files, the first that lists it serving
// it. A file found gone (ErrNotFound: a compaction or a GC elsewhere
// replaced it by files that list what it listed) is no answer: the set
// re-lists the index and looks again, so that a vanished file is never
// taken for a missing blob, nor for damage.
func (x *indexV2Set) lookupFiles(ctx context.Context, id ID) (indexEntry, bool, error) {
	for attempt := 1; ; attempt++ {
		x.mu.RLock()
		files, relists, store := x.files, x.relists, x.store // files: appended to only, this prefix stays as it is
		x.mu.RUnlock()
		e, ok, err := lookupIn(ctx, files, id)
		switch {
		case err != nil && store != nil && errors.Is(err, ErrNotFound) && attempt < maxIndexLoads:
			if rerr := x.relist(ctx, relists); rerr != nil {
				return e, false, fmt.Errorf("%w, and listing the index again failed: %w", err, rerr)
			}
			continue
		case err == nil && !ok && x.relistOnMiss && store != nil && attempt == 1:
			if rerr := x.relist(ctx, relists); rerr != nil {
				return e, false, fmt.Errorf("listing the index again after a miss: %w", rerr)
			}
			continue
		}
		return e, ok, err
	}
}

// lookupIn looks id up in files, in order.
func lookupIn(ctx context.Context, files []*indexV2Reader, id ID) (_ indexEntry, _ bool, err error) {
	// One fault guard for all the files' mapped filters (see mayList).
	defer recoverMappedFault(&err, files)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	for _, f := range files {
		e, _, ok, err := f.lookupGuarded(ctx, id)
		if err != nil || ok {
			return e, ok, err
		}
	}
	return indexEntry{}, false, nil
}

// relist brings the set's files in line with the store's listing: files
// gone are dropped, files new are opened and added after the others. seen
// is the count of re-listings the caller's lookup began under: when
// another lookup has re-listed since, that one did the work.
func (x *indexV2Set) relist(ctx context.Context, seen uint64) error {
	x.relistMu.Lock()
	defer x.relistMu.Unlock()
	x.mu.RLock()
	done := x.relists != seen
	x.mu.RUnlock()
	if done {
		return nil
	}
	infos, err := listObjects(ctx, x.store, indexPrefix)
	if err != nil {
		return fmt.Errorf("list index: %w", err)
	}
	listed := make(map[string]ObjectInfo, len(infos))
	for _, info := range infos {
		listed[info.Name] = info
	}
	x.mu.RLock()
	var files []*indexV2Reader
	names := map[string]bool{}
	before := len(x.files)
	for _, f := range x.files {
		if _, ok := listed[f.name]; ok {
			files = append(files, f)
			names[f.name] = true
		}
	}
	setAside := x.setAside
	x.mu.RUnlock()
	for _, info := range infos {
		if names[info.Name] || setAside[info.Name] {
			continue
		}
		f, err := openIndexV2Object(ctx, x.store, info.Name, info.Size)
		switch {
		case errors.Is(err, ErrNotFound):
			continue // gone already: its entries are in the file that replaced it
		case errors.As(err, new(*CorruptError)):
			if x.log != nil {
				x.log.Warn("damaged index file skipped", "object", info.Name, "error", err)
			}
			continue // verify reports it; GC rewrites the index
		case err != nil:
			return err
		}
		files = append(files, f)
		names[f.name] = true
	}
	x.mu.Lock()
	for _, f := range x.files[before:] { // added meanwhile, by a writer of this process
		if !names[f.name] {
			files = append(files, f)
			names[f.name] = true
		}
	}
	x.files, x.names = files, names
	x.relists++
	x.mu.Unlock()
	return nil
}

// relistNow re-lists the set's files at once (see relist).
func (x *indexV2Set) relistNow(ctx context.Context) error {
	x.mu.RLock()
	seen, store := x.relists, x.store
	x.mu.RUnlock()
	if store == nil {
		return nil
	}
	return x.relist(ctx, seen)
}

// openIndexV2Object opens the index file name, of size bytes, in store:
// the one place a version 2 index object is opened for lookups.
func openIndexV2Object(ctx context.Context, store Store, name string, size int64) (*indexV2Reader, error) {
	var mapper tailMapper
	if m, ok := store.(ObjectMapper); ok {
		mapper = func(off, length int64) ([]byte, func() error, error) {
			return m.MapObject(ctx, name, off, length)
		}
	}
	return openIndexV2Mapped(ctx, name, storeObjectRange{store, name}, size, mapper)
}

// addFile adds the reader of an index file, unless x has it already (a
// writer adds its file to an index that a reload may have read it into).
func (x *indexV2Set) addFile(f *indexV2Reader) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.names[f.name] {
		return
	}
	x.names[f.name] = true
	x.files = append(x.files, f)
}

func (x *indexV2Set) addWritten(ctx context.Context, store Store, files []writtenIndex) error {
	x.mu.Lock()
	if x.store == nil {
		x.store = store
	}
	x.mu.Unlock()
	gone := false
	for _, w := range files {
		f, err := openIndexV2Object(ctx, store, w.name, w.size)
		if errors.Is(err, ErrNotFound) {
			gone = true // merged already by a compaction elsewhere
			continue
		}
		if err != nil {
			return fmt.Errorf("open the index file just written: %w", err)
		}
		x.addFile(f)
	}
	if gone {
		// The merged file lists its entries: the listing has it.
		return x.relistNow(ctx)
	}
	return nil
}

// addRecovered adds a recovered pack's entries to the overlay; of a blob
// listed twice the first stays, as in version 1.
func (x *indexV2Set) addRecovered(pack ID, entries []packEntry) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.recovered[pack] = true
	x.recoveredEntries[pack] = entries
	for _, e := range entries {
		if _, dup := x.overlay[e.ID]; !dup {
			x.overlay[e.ID] = indexEntry{packEntry: e, Pack: pack}
		}
	}
}

// loadIndexV2Set reads the index of a version 2 repository: it opens every
// index file (damaged ones are skipped, their packs recovered from their
// own headers), and recovers the packs no file lists. As loadIndexState,
// it starts again when an object it listed is gone.
//
// Files named in exclude are taken for damaged (GC excludes those it found
// damaged past their tables).
func loadIndexV2Set(ctx context.Context, store Store, log *slog.Logger, exclude ...map[string]bool) (*indexV2Set, error) {
	excluded := map[string]bool{}
	for _, ex := range exclude {
		maps.Copy(excluded, ex)
	}
	for attempt := 1; ; attempt++ {
		x, err := loadIndexV2SetOnce(ctx, store, log, excluded)
		if err == nil {
			x.setAside = excluded
		}
		if !errors.Is(err, errListingChanged) {
			return x, err
		}
		if attempt == maxIndexLoads {
			return nil, fmt.Errorf("load index: the store changed under %d loads in a row: %w", attempt, err)
		}
	}
}

func loadIndexV2SetOnce(ctx context.Context, store Store, log *slog.Logger, exclude map[string]bool) (*indexV2Set, error) {
	x := newIndexV2Set()
	x.store, x.log = store, log
	infos, err := listObjects(ctx, store, indexPrefix)
	if err != nil {
		return nil, fmt.Errorf("list index: %w", err)
	}
	listed := map[ID]bool{} // packs some sound index file lists
	for _, info := range infos {
		if exclude[info.Name] {
			x.damaged = append(x.damaged, info.Name)
			continue
		}
		f, err := openIndexV2Object(ctx, store, info.Name, info.Size)
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				return nil, fmt.Errorf("%s: %w: %w", info.Name, errListingChanged, err)
			}
			if !errors.As(err, new(*CorruptError)) {
				return nil, err
			}
			x.damaged = append(x.damaged, info.Name)
			if x.openErrs == nil {
				x.openErrs = map[string]error{}
			}
			x.openErrs[info.Name] = err
			log.Warn("damaged index file; its packs are read from their own headers", "object", info.Name, "error", err)
			continue
		}
		x.addFile(f)
		for _, p := range f.packs {
			listed[p] = true
		}
	}
	stored, err := listPacks(ctx, store)
	if err != nil {
		return nil, err
	}
	for id, size := range stored {
		if listed[id] {
			continue
		}
		entries, err := readPackHeader(ctx, store, id, size)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, ErrNotFound) {
				return nil, fmt.Errorf("pack %s: %w: %w", id, errListingChanged, err)
			}
			if !errors.Is(err, ErrCorrupt) {
				return nil, fmt.Errorf("read the header of unindexed pack %s: %w", id, err)
			}
			log.Warn("unindexed pack with a damaged header left out of the index", "pack", id, "error", err)
			x.unreadable[id] = err
			continue
		}
		x.addRecovered(id, entries)
	}
	return x, nil
}

// refresh adds the index files other processes wrote since x was loaded,
// and loads the index again when one it read is gone or a pack it
// recovered is (a GC ran elsewhere), as index.refresh does.
func (x *indexV2Set) refresh(ctx context.Context, store Store, log *slog.Logger) (blobIndex, error) {
	if x.unloaded {
		return loadIndexV2Set(ctx, store, log)
	}
	infos, err := listObjects(ctx, store, indexPrefix)
	if err != nil {
		return nil, err
	}
	x.mu.RLock()
	var added []ObjectInfo
	kept := 0 // files of x still listed
	for _, info := range infos {
		switch {
		case x.names[info.Name]:
			kept++
		case !x.setAside[info.Name]:
			added = append(added, info)
		}
	}
	removed := kept != len(x.names)
	var recovered []ID
	for id := range x.recovered {
		recovered = append(recovered, id)
	}
	x.mu.RUnlock()
	if !removed {
		var err error
		if removed, err = anyPackGone(ctx, store, recovered); err != nil {
			return nil, err
		}
	}
	if removed {
		return loadIndexV2Set(ctx, store, log, x.setAsideWith(""))
	}
	for _, info := range added {
		f, err := openIndexV2Object(ctx, store, info.Name, info.Size)
		if errors.As(err, new(*CorruptError)) {
			log.Warn("damaged index file skipped", "object", info.Name, "error", err)
			continue // verify reports it; GC rewrites the index
		}
		if errors.Is(err, ErrNotFound) {
			return loadIndexV2Set(ctx, store, log, x.setAsideWith("")) // a GC replaced it meanwhile
		}
		if err != nil {
			return nil, err
		}
		x.addFile(f)
	}
	return x, nil
}

// setAsideWith returns the files x sets aside, and name (unless "").
func (x *indexV2Set) setAsideWith(name string) map[string]bool {
	out := maps.Clone(x.setAside)
	if out == nil {
		out = map[string]bool{}
	}
	if name != "" {
		out[name] = true
	}
	return out
}

// damagedIndexFile returns the index file err says is damaged, or "".
func damagedIndexFile(err error) string {
	if ce, ok := errors.AsType[*CorruptError](err); ok && strings.HasPrefix(ce.Object, indexPrefix) {
		return ce.Object
	}
	return ""
}

// listObjects lists the objects under prefix, with their sizes.
func listObjects(ctx context.Context, store Store, prefix string) ([]ObjectInfo, error) {
	var infos []ObjectInfo
	err := store.List(ctx, prefix, func(info ObjectInfo) error {
		infos = append(infos, info)
		return nil
	})
	return infos, err
}

// readIndexV2File reads a whole version 2 index file, checks it against its
// name and every entry in it, and returns its entries by pack.
func readIndexV2File(ctx context.Context, store Store, name string) ([]indexedPack, error) {
	data, err := store.Get(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("read index: %w", err)
	}
	if Hash(data).String() != name[len(indexPrefix):] {
		return nil, corrupt(name, "content does not match its name")
	}
	f, err := openIndexV2(ctx, name, readerAtRange{bytes.NewReader(data)}, int64(len(data)))
	if err != nil {
		return nil, err
	}
	byPack := map[ID][]packEntry{}
	err = f.iterate(ctx, func(_ int, e indexEntry) error {
		byPack[e.Pack] = append(byPack[e.Pack], e.packEntry)
		return nil
	})
	if err != nil {
		return nil, err
	}
	packs := make([]indexedPack, 0, len(byPack))
	for _, id := range f.packs { // in the file's order, so loads are repeatable
		if entries, ok := byPack[id]; ok {
			packs = append(packs, indexedPack{ID: id, Entries: entries})
		}
	}
	return packs, nil
}

// writeIndexV2Files stores packs, already stored, as version 2 index files
// of at most maxIndexEntries entries each. Of a blob listed more than once
// the first listing stays, as a version 1 index serves the first.
func writeIndexV2Files(ctx context.Context, store Store, packs []indexedPack) ([]writtenIndex, error) {
	// Sorted by reference (8 bytes an entry), not by copies of the entries
	// (80): a checkpoint of 2^18 blobs is what a create holds at its peak.
	type ref struct{ pack, entry uint32 }
	n := 0
	for _, p := range packs {
		n += len(p.Entries)
	}
	refs := make([]ref, 0, n)
	for i, p := range packs {
		for j := range p.Entries {
			refs = append(refs, ref{uint32(i), uint32(j)})
		}
	}
	id := func(r ref) *ID { return &packs[r.pack].Entries[r.entry].ID }
	slices.SortStableFunc(refs, func(a, b ref) int { return bytes.Compare(id(a)[:], id(b)[:]) })
	refs = slices.CompactFunc(refs, func(a, b ref) bool { return *id(a) == *id(b) })
	now := time.Now().Unix()
	w := newIndexV2Writer(maxIndexEntries)
	var files []writtenIndex
	for len(refs) > 0 {
		piece := refs[:min(len(refs), maxIndexEntries)]
		refs = refs[len(piece):]
		// Sized once, the entries encoded where the file has them: grown
		// by appends, or copied, the buffers would hold up to twice the file.
		inPiece := make([]bool, len(packs))
		distinct := 0
		for _, r := range piece {
			if !inPiece[r.pack] {
				inPiece[r.pack] = true
				distinct++
			}
		}
		w.presize(len(piece), distinct)
		w.noteWritten(now)
		for _, r := range piece {
			p := &packs[r.pack]
			if err := w.add(indexEntry{packEntry: p.Entries[r.entry], Pack: p.ID}); err != nil {
				return files, err
			}
		}
		data, err := w.finish()
		if err != nil {
			return files, err
		}
		f, err := putIndexV2File(ctx, store, data)
		if err != nil {
			return files, err
		}
		files = append(files, f)
	}
	return files, nil
}

// putIndexV2File stores an index file under the name its bytes give it.
func putIndexV2File(ctx context.Context, store Store, data []byte) (writtenIndex, error) {
	name := indexPrefix + Hash(data).String()
	if err := store.Put(ctx, name, data); err != nil {
		return writtenIndex{}, fmt.Errorf("write index: %w", err)
	}
	return writtenIndex{name: name, size: int64(len(data))}, nil
}

// lookupBatchIn looks up ids, sorted and distinct and none zero, in files
// as a lookup of each would (the first file that lists an ID serves it),
// a file at a time with a merge join (indexV2Reader.lookupSorted): fn is
// called with each ID found, the file's number in files, and the entry
// and its position there. It works in place, holding nothing per ID: ids
// ends up holding, at its start, the IDs no file lists, which it returns.
func lookupBatchIn(ctx context.Context, files []*indexV2Reader, ids []ID, fn func(id ID, file, pos int, e indexEntry) error) ([]ID, error) {
	for k, f := range files {
		if len(ids) == 0 {
			break
		}
		found := 0
		// The IDs found are marked zero (no ID looked up is) as they are
		// found: lookupSorted reads none it has passed again.
		err := f.lookupSorted(ctx, ids, func(i int, e indexEntry, pos int) error {
			found++
			id := ids[i]
			ids[i] = ZeroID
			return fn(id, k, pos, e)
		})
		if err != nil {
			return nil, err
		}
		if found == 0 {
			continue
		}
		// Compact, keeping the order the next file's merge join needs.
		ids = slices.DeleteFunc(ids, func(id ID) bool { return id.IsZero() })
	}
	return ids, nil
}

// sortIDs sorts ids and drops repeats.
func sortIDs(ids []ID) []ID {
	slices.SortFunc(ids, func(a, b ID) int { return bytes.Compare(a[:], b[:]) })
	return slices.Compact(ids)
}
