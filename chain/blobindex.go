package chain

import (
	"context"
	"log/slog"
)

// blobIndex is where the repository's blobs are, as reads and writers see
// it, whatever the format's index files: version 1's are held in memory
// whole (*index), version 2's are looked up a bucket at a time
// (*indexV2Set). GC, verify and repair load an indexState of their own.
type blobIndex interface {
	// find returns the entry of blob id and the pack that holds it; ok is
	// false when no index file or recovered pack lists it. An error is a
	// failed read of the index (version 2 reads as it looks up), never a
	// missing blob.
	find(ctx context.Context, id ID) (e packEntry, pack ID, ok bool, err error)
	// holds reports whether the repository holds blob id and, for a tree
	// node, everything under it, so that a writer need not store it and a
	// copy may skip its subtree: only index files make that promise for a
	// tree node (see index.has).
	holds(ctx context.Context, id ID) (bool, error)
	// generation orders indexes by when they began to load (see setIndex).
	generation() uint64
	// isUnloaded reports a placeholder for an index not read yet.
	isUnloaded() bool
	// refresh brings the index up to date with the store and returns the
	// index to use from now on (itself, or a fresh load).
	refresh(ctx context.Context, store Store, log *slog.Logger) (blobIndex, error)
	// addWritten adds index files that a writer of this process has
	// just stored.
	addWritten(ctx context.Context, store Store, files []writtenIndex) error
}

// writtenIndex is an index file a writer stored: its name and size, and
// the packs it lists.
type writtenIndex struct {
	name  string
	size  int64
	packs []indexedPack
}

func (x *index) find(_ context.Context, id ID) (packEntry, ID, bool, error) {
	loc, pack, ok := x.lookup(id)
	if !ok {
		return packEntry{}, ID{}, false, nil
	}
	return loc.entry(id), pack, true, nil
}

func (x *index) holds(_ context.Context, id ID) (bool, error) { return x.has(id), nil }

func (x *index) generation() uint64 { return x.gen }

func (x *index) isUnloaded() bool { return x.unloaded }

func (x *index) addWritten(_ context.Context, _ Store, files []writtenIndex) error {
	for _, f := range files {
		x.add(f.name, f.packs)
	}
	return nil
}

// entry is the pack entry of blob id at loc.
func (loc blobLocation) entry(id ID) packEntry {
	return packEntry{ID: id, Type: loc.typ, Compressed: loc.compressed, Offset: loc.offset, Length: loc.length, RawLength: loc.rawLength}
}
