package chain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
)

// blobLocation is where the index says a blob is; the pack is a number into
// index.packs so that an entry costs 16 bytes rather than 48.
type blobLocation struct {
	pack       uint32
	offset     uint32
	length     uint32
	rawLength  uint32
	typ        BlobType
	compressed bool
	// unlisted: a tree node known only from its pack's own header, which no
	// index file lists. It can be read, but it promises nothing about the
	// nodes and chunks under it (see has).
	unlisted bool
}

// index is the in-memory union of the repository's index files. Writers
// add to the repository's index while readers look blobs up in it, so every
// access to its maps goes through a method that holds mu.
type index struct {
	mu      sync.RWMutex
	files   map[string]bool // index objects loaded
	packs   []ID
	packNum map[ID]uint32
	blobs   map[ID]blobLocation

	// recovered: packs no index file listed, read from their own headers
	// (a failed create's, or left for readers by a GC): refresh checks
	// that they still exist, since a GC may delete them without changing
	// any index file.
	recovered map[ID]bool

	// gen orders indexes by when they began to load (see setIndex).
	gen uint64
	// unloaded: a placeholder for an index not read yet (Open reads none);
	// refresh loads it, and a read that misses in it reloads.
	unloaded bool
}

// newUnloadedIndex is the index of a repository whose index files have not
// been read yet. It must not outrank an index loaded since, so it takes
// generation 0.
func newUnloadedIndex() *index {
	x := newIndex()
	x.gen, x.unloaded = 0, true
	return x
}

// indexGeneration numbers the indexes of this process as they are begun.
var indexGeneration atomic.Uint64

func newIndex() *index {
	return &index{files: map[string]bool{}, packNum: map[ID]uint32{}, blobs: map[ID]blobLocation{}, gen: indexGeneration.Add(1)}
}

const indexPrefix = "index/"

func (x *index) lookup(id ID) (blobLocation, ID, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	loc, ok := x.blobs[id]
	if !ok {
		return loc, ID{}, false
	}
	return loc, x.packs[loc.pack], true
}

// has reports whether the repository holds blob id, and, for a tree node,
// everything under it: a writer need not store it again, and a copy may
// skip its subtree. Only index files make that promise (a writer lists a
// tree pack only after the packs under it, and GC unlists dead nodes);
// a tree node recovered from a pack's header may be a dead one whose
// subtree a GC swept, or one a crash or a half-done sweep left without
// its children, so it is readable (lookup) but not held.
func (x *index) has(id ID) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	loc, ok := x.blobs[id]
	return ok && !loc.unlisted
}

// packEntries returns, per pack, the entries of the blobs the index serves
// from that pack: a copy, so that the caller may read it while x changes.
func (x *index) packEntries() map[ID][]packEntry {
	x.mu.RLock()
	defer x.mu.RUnlock()
	byPack := make(map[ID][]packEntry, len(x.packs))
	for id, loc := range x.blobs {
		p := x.packs[loc.pack]
		byPack[p] = append(byPack[p], packEntry{ID: id, Type: loc.typ, Compressed: loc.compressed, Offset: loc.offset, Length: loc.length, RawLength: loc.rawLength})
	}
	return byPack
}

// add records packs from the index object name ("" for packs recovered
// from their own headers).
func (x *index) add(name string, packs []indexedPack) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if name != "" {
		x.files[name] = true
	} else {
		if x.recovered == nil {
			x.recovered = map[ID]bool{}
		}
		for _, p := range packs {
			x.recovered[p.ID] = true
		}
	}
	for _, p := range packs {
		num, ok := x.packNum[p.ID]
		if !ok {
			num = uint32(len(x.packs))
			x.packs = append(x.packs, p.ID)
			x.packNum[p.ID] = num
		}
		for _, e := range p.Entries {
			loc := blobLocation{pack: num, offset: e.Offset, length: e.Length, rawLength: e.RawLength, typ: e.Type, compressed: e.Compressed,
				unlisted: name == "" && e.Type == TreeBlob}
			if old, dup := x.blobs[e.ID]; dup && (!old.unlisted || loc.unlisted) {
				continue // the same blob in two packs: the first one serves, unless a listed one comes
			}
			x.blobs[e.ID] = loc
		}
	}
}

// indexState is everything known about where blobs are: the index files
// (sound or not), each pack's entries, and the packs in the store.
type indexState struct {
	idx        *index
	files      []string           // every index object, sound or damaged
	damaged    map[string]error   // index objects that could not be read
	entries    map[ID][]packEntry // per pack, from index files or its own header
	stored     map[ID]int64       // packs in the store, with their sizes
	recovered  []ID               // packs no sound index lists, read from their headers
	unreadable map[ID]error       // packs no index lists whose header is damaged too
}

// loadIndexState reads every index file, tolerating damaged ones, and
// recovers the entries of packs that no sound index file lists from the
// packs' own headers: a lost or damaged index file loses nothing.
//
// A GC elsewhere writes its new index file before it removes the old ones
// and their packs, so an index file or pack that vanishes between listing
// and reading means the listing is out of date: the load starts again.
//
// The state holds every entry in memory, in version 2 as in version 1:
// version 2 files are read whole (readIndexV2File) into the same maps.
func loadIndexState(ctx context.Context, store Store, version int, log *slog.Logger) (*indexState, error) {
	for attempt := 1; ; attempt++ {
		st, err := loadIndexStateOnce(ctx, store, version, log)
		if !errors.Is(err, errListingChanged) {
			return st, err
		}
		if attempt == maxIndexLoads {
			return nil, fmt.Errorf("load index: the store changed under %d loads in a row: %w", attempt, err)
		}
	}
}

// maxIndexLoads bounds loadIndexState's fresh starts; each one means a GC
// finished meanwhile, so a handful is plenty.
const maxIndexLoads = 8

// errListingChanged: an object listed a moment ago is gone.
var errListingChanged = errors.New("an object listed a moment ago is gone")

func loadIndexStateOnce(ctx context.Context, store Store, version int, log *slog.Logger) (*indexState, error) {
	names, err := listNames(ctx, store, indexPrefix)
	if err != nil {
		return nil, fmt.Errorf("list index: %w", err)
	}
	st := &indexState{idx: newIndex(), files: names, damaged: map[string]error{}, entries: map[ID][]packEntry{}, unreadable: map[ID]error{}}
	read := readIndexFile
	if version == FormatVersion2 {
		read = readIndexV2File
	}
	for _, name := range names {
		packs, err := read(ctx, store, name)
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				return nil, fmt.Errorf("%s: %w: %w", name, errListingChanged, err)
			}
			if !errors.As(err, new(*CorruptError)) {
				return nil, err
			}
			st.damaged[name] = err
			log.Warn("damaged index file; its packs are read from their own headers", "object", name, "error", err)
			continue
		}
		st.idx.add(name, packs)
		for _, p := range packs {
			// A version 2 file may list part of a pack (a merge splits
			// files by ID), and two files the same entries (a GC that
			// stopped before deleting the old files).
			st.entries[p.ID] = appendNewEntries(st.entries[p.ID], p.Entries)
		}
	}
	if st.stored, err = listPacks(ctx, store); err != nil {
		return nil, err
	}
	for id, size := range st.stored {
		if _, ok := st.entries[id]; ok {
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
				return nil, fmt.Errorf("read the header of unindexed pack %s: %w", id, err) // the store failed: not damage
			}
			st.unreadable[id] = err
			continue
		}
		st.entries[id] = entries
		st.recovered = append(st.recovered, id)
		st.idx.add("", []indexedPack{{ID: id, Entries: entries}})
	}
	return st, nil
}

// appendNewEntries appends to have the entries of more whose blobs it
// does not list yet.
func appendNewEntries(have, more []packEntry) []packEntry {
	if len(have) == 0 {
		return more
	}
	listed := make(map[ID]bool, len(have))
	for _, e := range have {
		listed[e.ID] = true
	}
	for _, e := range more {
		if !listed[e.ID] {
			have = append(have, e)
			listed[e.ID] = true
		}
	}
	return have
}

// anyPackGone reports whether any of packs is no longer in the store: a
// GC elsewhere deleted a pack this process recovered from its header, and
// a writer must not deduplicate against its blobs, so the index is loaded
// again.
func anyPackGone(ctx context.Context, store Store, packs []ID) (bool, error) {
	for _, id := range packs {
		if _, err := store.Stat(ctx, packName(id)); errors.Is(err, ErrNotFound) {
			return true, nil
		} else if err != nil {
			return false, err
		}
	}
	return false, nil
}

// loadIndex reads the index of a version 1 repository.
func loadIndex(ctx context.Context, store Store, log *slog.Logger) (*index, error) {
	st, err := loadIndexState(ctx, store, FormatVersion, log)
	if err != nil {
		return nil, err
	}
	return st.idx, nil
}

// refresh brings x up to date with the store: new index files are added; if
// any was removed (a GC ran elsewhere), the whole index is reloaded, since
// its packs may be gone. It returns the index to use from now on.
func (x *index) refresh(ctx context.Context, store Store, log *slog.Logger) (blobIndex, error) {
	if x.unloaded {
		return loadIndex(ctx, store, log)
	}
	names, err := listNames(ctx, store, indexPrefix)
	if err != nil {
		return nil, err
	}
	x.mu.RLock()
	var added []string
	for _, name := range names {
		if !x.files[name] {
			added = append(added, name)
		}
	}
	removed := len(names)-len(added) != len(x.files) // some file we loaded is gone
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
		return loadIndex(ctx, store, log)
	}
	for _, name := range added {
		packs, err := readIndexFile(ctx, store, name)
		if errors.As(err, new(*CorruptError)) {
			log.Warn("damaged index file skipped", "object", name, "error", err)
			continue // verify reports it; GC rewrites the index
		}
		if errors.Is(err, ErrNotFound) {
			return loadIndex(ctx, store, log) // a GC replaced it meanwhile
		}
		if err != nil {
			return nil, err
		}
		x.add(name, packs)
	}
	return x, nil
}

func readIndexFile(ctx context.Context, store Store, name string) ([]indexedPack, error) {
	data, err := store.Get(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("read index: %w", err)
	}
	if Hash(data).String() != strings.TrimPrefix(name, indexPrefix) {
		return nil, corrupt(name, "content does not match its name")
	}
	packs, err := decodeIndexFile(data)
	if err != nil {
		return nil, corrupt(name, "%v", err)
	}
	return packs, nil
}

// writeIndexFile stores packs as a new index object and returns its name.
func writeIndexFile(ctx context.Context, store Store, packs []indexedPack) (string, error) {
	data := encodeIndexFile(packs)
	name := indexPrefix + Hash(data).String()
	if err := store.Put(ctx, name, data); err != nil {
		return "", fmt.Errorf("write index: %w", err)
	}
	return name, nil
}

// replaceIndex makes packs the whole index: it writes index files for
// them (one in version 1; in version 2, files of at most maxIndexEntries
// entries), deletes the old index files, and serves the new index. It
// returns how many old files it deleted. The new files are durable before
// any old one goes, so a crash leaves either the old index or both
// (duplicates, which the next GC folds). Callers hold the exclusive lock.
func (r *Repository) replaceIndex(ctx context.Context, packs []indexedPack, old []string) (int, error) {
	var files []writtenIndex
	if len(packs) > 0 {
		var err error
		if files, err = r.writeIndexFiles(ctx, packs); err != nil {
			return 0, err
		}
	}
	written := map[string]bool{}
	for _, f := range files {
		written[f.name] = true
	}
	deleted := 0
	for _, o := range old {
		if written[o] {
			continue
		}
		if err := r.store.Delete(ctx, o); err != nil && !errors.Is(err, ErrNotFound) {
			return deleted, err
		}
		deleted++
	}
	fresh := r.newIndex()
	if err := fresh.addWritten(ctx, r.store, files); err != nil {
		return deleted, err
	}
	r.setIndex(fresh)
	return deleted, nil
}

// writeIndexFiles stores index files of the repository's format for packs
// already stored.
func (r *Repository) writeIndexFiles(ctx context.Context, packs []indexedPack) ([]writtenIndex, error) {
	if r.config.Version == FormatVersion2 {
		return writeIndexV2Files(ctx, r.store, packs)
	}
	name, err := writeIndexFile(ctx, r.store, packs)
	if err != nil {
		return nil, err
	}
	return []writtenIndex{{name: name, packs: packs}}, nil
}

// newIndex returns an empty, loaded index of the repository's format.
func (r *Repository) newIndex() blobIndex {
	if r.config.Version == FormatVersion2 {
		return newIndexV2Set()
	}
	return newIndex()
}

// loadIndex reads the repository's index.
func (r *Repository) loadIndex(ctx context.Context) (blobIndex, error) {
	if r.config.Version == FormatVersion2 {
		return loadIndexV2Set(ctx, r.store, r.Logger())
	}
	return loadIndex(ctx, r.store, r.Logger())
}
