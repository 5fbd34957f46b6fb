package chain

import (
	"bytes"
	"encoding/binary"
	"slices"
)

// storedPackIndex finds a blob among a writer's packs that are stored but
// not yet listed by an index file, without a hash set of their IDs: for
// each pack, its entries' positions in ID order (4 bytes an entry, for a
// binary search), and a set of the IDs' first 8 bytes (about 9 bytes an
// entry where a set of whole IDs takes about 33), which answers the
// common case, a blob the writer has not seen, in one probe. Two IDs
// sharing their first 8 bytes cost a binary search, never a wrong answer.
type storedPackIndex struct {
	byID     [][]uint32 // per pack, in the order of the packs it indexes
	prefixes map[uint64]struct{}
}

// entriesByID returns the positions of entries in ID order, for add.
func entriesByID(entries []packEntry) []uint32 {
	order := make([]uint32, len(entries))
	for i := range order {
		order[i] = uint32(i)
	}
	slices.SortFunc(order, func(a, b uint32) int { return bytes.Compare(entries[a].ID[:], entries[b].ID[:]) })
	return order
}

// add indexes the entries of the next pack; order is entriesByID's.
func (x *storedPackIndex) add(entries []packEntry, order []uint32) {
	x.byID = append(x.byID, order)
	if x.prefixes == nil {
		x.prefixes = make(map[uint64]struct{}, len(entries))
	}
	for i := range entries {
		x.prefixes[idPrefix(&entries[i].ID)] = struct{}{}
	}
}

// holds reports whether one of packs, the packs x indexes, lists id.
func (x *storedPackIndex) holds(packs []indexedPack, id *ID) bool {
	if _, ok := x.prefixes[idPrefix(id)]; !ok {
		return false
	}
	for i, p := range packs {
		_, found := slices.BinarySearchFunc(x.byID[i], id, func(pos uint32, id *ID) int {
			return bytes.Compare(p.Entries[pos].ID[:], id[:])
		})
		if found {
			return true
		}
	}
	return false
}

// prepend makes x index before's packs, then its own.
func (x *storedPackIndex) prepend(before storedPackIndex) {
	x.byID = append(before.byID, x.byID...)
	if x.prefixes == nil {
		x.prefixes = before.prefixes
		return
	}
	for k := range before.prefixes {
		x.prefixes[k] = struct{}{}
	}
}

// idPrefix is the first 8 bytes of an ID, as a number.
func idPrefix(id *ID) uint64 { return binary.LittleEndian.Uint64(id[:8]) }
