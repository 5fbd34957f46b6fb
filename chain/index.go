package chain

import (
	"context"
	"fmt"
	"strings"
	"sync"
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
}

// index is the in-memory union of the repository's index files.
type index struct {
	mu      sync.RWMutex
	files   map[string]bool // index objects loaded
	packs   []ID
	packNum map[ID]uint32
	blobs   map[ID]blobLocation
}

func newIndex() *index {
	return &index{files: map[string]bool{}, packNum: map[ID]uint32{}, blobs: map[ID]blobLocation{}}
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

func (x *index) has(id ID) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	_, ok := x.blobs[id]
	return ok
}

// add records packs from the index object name.
func (x *index) add(name string, packs []IndexedPack) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.files[name] = true
	for _, p := range packs {
		num, ok := x.packNum[p.ID]
		if !ok {
			num = uint32(len(x.packs))
			x.packs = append(x.packs, p.ID)
			x.packNum[p.ID] = num
		}
		for _, e := range p.Entries {
			if _, dup := x.blobs[e.ID]; dup {
				continue // the same blob in two packs: the first one serves
			}
			x.blobs[e.ID] = blobLocation{pack: num, offset: e.Offset, length: e.Length, rawLength: e.RawLength, typ: e.Type, compressed: e.Compressed}
		}
	}
}

// loadIndex reads every index object into a fresh index.
func loadIndex(ctx context.Context, store Store) (*index, error) {
	files, names, err := readAllIndexFiles(ctx, store)
	if err != nil {
		return nil, err
	}
	x := newIndex()
	for _, name := range names {
		x.add(name, files[name])
	}
	return x, nil
}

// refresh brings x up to date with the store: new index files are added; if
// any was removed (a GC ran elsewhere), the whole index is reloaded, since
// its packs may be gone. It returns the index to use from now on.
func (x *index) refresh(ctx context.Context, store Store) (*index, error) {
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
	x.mu.RUnlock()
	if removed {
		return loadIndex(ctx, store)
	}
	for _, name := range added {
		packs, err := readIndexFile(ctx, store, name)
		if err != nil {
			return nil, err
		}
		x.add(name, packs)
	}
	return x, nil
}

func readIndexFile(ctx context.Context, store Store, name string) ([]IndexedPack, error) {
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
func writeIndexFile(ctx context.Context, store Store, packs []IndexedPack) (string, error) {
	data := encodeIndexFile(packs)
	name := indexPrefix + Hash(data).String()
	if err := store.Put(ctx, name, data); err != nil {
		return "", fmt.Errorf("write index: %w", err)
	}
	return name, nil
}

func listNames(ctx context.Context, store Store, prefix string) ([]string, error) {
	var names []string
	err := store.List(ctx, prefix, func(info ObjectInfo) error {
		names = append(names, info.Name)
		return nil
	})
	return names, err
}
