package chain

import (
	"bytes"
	"testing"
)

// FuzzSealedPackHeader: whatever the bytes of a pack with a sealed header
// (an encrypted version 2 repository's), decoding never panics, and what it
// accepts is a header sealed under the key that covers the pack's blob
// bytes exactly, which a pack with the header changed, moved or not sealed
// never is.
func FuzzSealedPackHeader(f *testing.F) {
	keys, err := deriveSubkeys2(bytes.Repeat([]byte{7}, masterKeySize), nil)
	if err != nil {
		f.Fatal(err)
	}
	entries := []packEntry{
		{ID: ID{1}, Type: DataBlob, Length: 100 + sealOverhead2, RawLength: 100},
		{ID: ID{2}, Type: TreeBlob, Compressed: true, Offset: 140, Length: 30, RawLength: 500},
	}
	f.Add(appendPackHeader(make([]byte, 170), entries, keys))
	f.Add(appendPackHeader(nil, nil, keys))
	f.Add(appendPackHeader(make([]byte, 170), entries, nil))
	f.Fuzz(func(t *testing.T, pack []byte) {
		got, err := decodePack(pack, keys)
		if err != nil {
			return
		}
		n, sealed, err := packHeaderSpan(pack[len(pack)-packTrailerSize:], int64(len(pack)))
		if err != nil || !sealed {
			t.Fatalf("accepted a pack whose trailer says sealed %v, %v", sealed, err)
		}
		var end int64
		for i, e := range got {
			if err := e.check(); err != nil {
				t.Fatalf("accepted entry %d: %v", i, err)
			}
			if int64(e.Offset) != end {
				t.Fatalf("entry %d at %d, want %d", i, e.Offset, end)
			}
			end += int64(e.Length)
		}
		if end != int64(len(pack)-packTrailerSize-n) {
			t.Fatalf("entries cover %d bytes of %d", end, len(pack)-packTrailerSize-n)
		}
		if _, err := decodePack(pack, nil); err == nil {
			t.Fatal("a sealed header decoded without the key")
		}
	})
}

// A version 2 pack's sealed header round-trips; any byte of it changed, the
// blob bytes before it grown or shrunk, or the pack read without the key,
// is an error; a plain header in an encrypted repository is refused.
func TestSealedPackHeader(t *testing.T) {
	keys, err := deriveSubkeys2(bytes.Repeat([]byte{9}, masterKeySize), nil)
	if err != nil {
		t.Fatal(err)
	}
	entries := []packEntry{
		{ID: ID{1}, Type: DataBlob, Length: 100 + sealOverhead2, RawLength: 100},
		{ID: ID{2}, Type: TreeBlob, Compressed: true, Offset: 140, Length: 30, RawLength: 500},
	}
	pack := appendPackHeader(make([]byte, 170), entries, keys)
	got, err := decodePack(pack, keys)
	if err != nil || len(got) != 2 || got[0] != entries[0] || got[1] != entries[1] {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if string(pack[len(pack)-4:]) != sealedPackMagic {
		t.Fatalf("trailer magic %q", pack[len(pack)-4:])
	}
	// The lengths are not in the clear: the plain header's bytes are not
	// in the sealed pack.
	if bytes.Contains(pack, appendPackEntries(nil, entries[:1])[:10]) {
		t.Fatal("a header entry's lengths are stored in the clear")
	}
	for i := 170; i < len(pack)-packTrailerSize; i++ {
		damaged := bytes.Clone(pack)
		damaged[i] ^= 1
		if _, err := decodePack(damaged, keys); err == nil {
			t.Fatalf("header byte %d changed: accepted", i-170)
		}
	}
	moved := append(make([]byte, 1), pack...)
	if _, err := decodePack(moved, keys); err == nil {
		t.Fatal("a header moved after other blob bytes: accepted")
	}
	if _, err := decodePack(pack, nil); err == nil {
		t.Fatal("a sealed header read without the key")
	}
	if _, err := decodePack(appendPackHeader(make([]byte, 170), entries, nil), keys); err == nil {
		t.Fatal("a plain header accepted in an encrypted repository")
	}
}
