package chain

import (
	"encoding/binary"
	"testing"
)

// storedPackIndex answers exactly, even for IDs that share their first 8
// bytes, and so their bit of the bitmap (which says only "maybe"), across
// packs, and after prepend.
func TestStoredPackIndexIsExact(t *testing.T) {
	id := func(prefix, rest uint64) ID {
		var id ID
		binary.LittleEndian.PutUint64(id[:8], prefix)
		binary.LittleEndian.PutUint64(id[24:], rest)
		return id
	}
	pack := func(ids ...ID) indexedPack {
		p := indexedPack{ID: Hash([]byte(ids[0].String()))}
		for _, id := range ids {
			p.Entries = append(p.Entries, packEntry{ID: id, Type: DataBlob})
		}
		return p
	}
	first := pack(id(1, 9), id(7, 1), id(3, 3))
	second := pack(id(7, 2), id(5, 5))
	var x storedPackIndex
	x.add(first.Entries, entriesByID(first.Entries))
	packs := []indexedPack{first}
	var later storedPackIndex
	later.add(second.Entries, entriesByID(second.Entries))
	later.prepend(x)
	all := []indexedPack{first, second}
	for _, tc := range []struct {
		id         ID
		inX, inAll bool
	}{
		{id(1, 9), true, true},
		{id(7, 1), true, true},
		{id(7, 2), false, true}, // its prefix is first's too
		{id(7, 3), false, false},
		{id(5, 5), false, true},
		{id(3, 4), false, false},
		{id(2, 0), false, false},
	} {
		if got := x.holds(packs, &tc.id); got != tc.inX {
			t.Errorf("first pack holds %s: %v, want %v", tc.id.Short(), got, tc.inX)
		}
		if got := later.holds(all, &tc.id); got != tc.inAll {
			t.Errorf("both packs hold %s: %v, want %v", tc.id.Short(), got, tc.inAll)
		}
	}
}
