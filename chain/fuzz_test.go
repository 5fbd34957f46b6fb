package chain

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// Every decoder of stored bytes has a fuzz target: whatever the bytes, it
// returns an error or a value that passes its own checks, never panics, and
// never allocates more than the input can describe.

func FuzzPackHeader(f *testing.F) {
	entries := []packEntry{
		{ID: Hash([]byte("a")), Type: DataBlob, Compressed: true, Length: 10, RawLength: 100},
		{ID: Hash([]byte("b")), Type: TreeBlob, Length: 7, RawLength: 7, Offset: 10},
	}
	f.Add(appendPackHeader(make([]byte, 17), entries, nil))
	f.Add(appendPackHeader(nil, nil, nil))
	f.Add([]byte("dpk1"))
	f.Fuzz(func(t *testing.T, pack []byte) {
		if len(pack) < packTrailerSize {
			return
		}
		n, err := packHeaderLength(pack[len(pack)-packTrailerSize:], int64(len(pack)))
		if err != nil {
			return
		}
		dataSize := int64(len(pack) - packTrailerSize - n)
		got, err := decodePackHeader(pack[dataSize:len(pack)-packTrailerSize], dataSize)
		if err != nil {
			return
		}
		var end int64
		for _, e := range got {
			if e.check() != nil || int64(e.Offset) != end {
				t.Fatalf("accepted a bad entry %+v", e)
			}
			end += int64(e.Length)
		}
		if end != dataSize {
			t.Fatalf("entries cover %d of %d bytes", end, dataSize)
		}
	})
}

func FuzzIndexFile(f *testing.F) {
	f.Add(encodeIndexFile([]indexedPack{{ID: Hash([]byte("p")), Entries: []packEntry{
		{ID: Hash([]byte("a")), Type: DataBlob, Compressed: true, Offset: 0, Length: 10, RawLength: 100},
	}}}))
	f.Add(encodeIndexFile(nil))
	f.Add([]byte("dpi1\xff\xff\xff\xff\x0f"))
	f.Fuzz(func(t *testing.T, data []byte) {
		packs, err := decodeIndexFile(data)
		if err != nil {
			return
		}
		for _, p := range packs {
			for _, e := range p.Entries {
				if e.check() != nil {
					t.Fatalf("accepted a bad entry %+v", e)
				}
			}
		}
		// What decodes survives encoding and decoding again unchanged.
		again, err := decodeIndexFile(encodeIndexFile(packs))
		if err != nil || fmt.Sprint(again) != fmt.Sprint(packs) {
			t.Fatalf("decode/encode/decode does not round-trip: %v", err)
		}
	})
}

func FuzzTreeNode(f *testing.F) {
	f.Add(encodeTreeNode(nil, 0, []ID{Hash([]byte("x")), ZeroID}))
	f.Add(encodeTreeNode(nil, 3, []ID{Hash([]byte("y"))}))
	f.Add([]byte("dpt1\x00\x00\x00\x00\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		level, ids, err := decodeTreeNode(nil, data)
		if err != nil {
			return
		}
		if len(ids) == 0 {
			t.Fatal("accepted an empty node")
		}
		if again := encodeTreeNode(nil, level, ids); string(again) != string(data) {
			t.Fatal("decode/encode does not round-trip")
		}
	})
}

func FuzzManifest(f *testing.F) {
	m := Manifest{ID: "20261122-010203-abcdef", Collection: "vm1", Created: time.Unix(1, 0).UTC(), Consistency: "crash",
		Disks: []DiskManifest{{Name: "os", Size: 1 << 20, BlockSize: 64 << 10, Root: Hash([]byte("r"))}}}
	good, _ := json.Marshal(m)
	f.Add(good)
	f.Add([]byte(`{"id":"../x","collection":"vm","disks":[]}`))
	f.Add([]byte(`{"id":"p","collection":"vm","disks":[{"name":"a","size":-1,"block_size":65536}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeManifest("manifests/fuzz", data)
		if err != nil {
			return
		}
		if CheckName("collection", m.Collection) != nil || CheckName("restore point", m.ID) != nil {
			t.Fatalf("accepted bad names %q/%q", m.Collection, m.ID)
		}
		for _, d := range m.Disks {
			if CheckName("disk", d.Name) != nil || d.Size <= 0 || CheckBlockSize(d.BlockSize) != nil {
				t.Fatalf("accepted a bad disk %+v", d)
			}
		}
	})
}

func FuzzConfig(f *testing.F) {
	cfg, _ := NewConfig(0)
	good, _ := json.Marshal(cfg)
	f.Add(good)
	f.Add([]byte(`{"version":1,"block_size":3}`))
	f.Add([]byte(`{"version":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decodeConfig(data)
		if err != nil {
			return
		}
		if c.Version != FormatVersion && c.Version != FormatVersion2 || c.Version == FormatVersion2 && c.Encryption != "" || CheckBlockSize(c.BlockSize) != nil || c.TreeFanout < 2 || c.PackSize < 1<<20 {
			t.Fatalf("accepted a bad config %+v", c)
		}
	})
}
