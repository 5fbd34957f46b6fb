package chain

import (
	"bytes"
	"encoding/binary"
	"slices"
)

// storedPackIndex finds a blob among a writer's packs that are stored but
// not yet listed by an index file, without a hash set of their IDs: for
// each pack, its entries' positions in ID order (4 bytes an entry, for a
// binary search), and a bitmap of 16 bits per entry of a checkpoint
// (512 KiB for 2^18 entries, where a hash set of whole IDs took 17-22 MB)
// with one bit set per ID, chosen by the ID's low bits. IDs are uniform,
// so a blob the writer has not seen (the common case) finds its bit clear
// but for about 1 in 16, and only those pay the binary searches. The bitmap
// says only "maybe": every answer is the binary search's, exact.
type storedPackIndex struct {
	byID [][]uint32 // per pack, in the order of the packs it indexes
	seen []uint64   // the bitmap, a power of two bits long
}

// storedPackBitmapBits: the bitmap's length for the checkpoint bound, at
// least 4,096 bits.
func storedPackBitmapBits() uint64 {
	bits := uint64(4096)
	for bits < 16*uint64(indexCheckpointEntries) {
		bits *= 2
	}
	return bits
}

// bit is where id's bit is in x.seen.
func (x *storedPackIndex) bit(id *ID) (word int, mask uint64) {
	b := binary.LittleEndian.Uint64(id[:8]) & (uint64(len(x.seen))*64 - 1)
	return int(b >> 6), 1 << (b & 63)
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
	if x.seen == nil {
		x.seen = make([]uint64, storedPackBitmapBits()/64)
	}
	for i := range entries {
		w, m := x.bit(&entries[i].ID)
		x.seen[w] |= m
	}
}

// holds reports whether one of packs, the packs x indexes, lists id.
func (x *storedPackIndex) holds(packs []indexedPack, id *ID) bool {
	if x.seen == nil {
		return false
	}
	if w, m := x.bit(id); x.seen[w]&m == 0 {
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
	switch {
	case x.seen == nil:
		x.seen = before.seen
	case before.seen == nil:
	case len(x.seen) == len(before.seen):
		for i := range x.seen {
			x.seen[i] |= before.seen[i]
		}
	default: // the checkpoint bound changed between them (tests): all maybe
		for i := range x.seen {
			x.seen[i] = ^uint64(0)
		}
	}
}
