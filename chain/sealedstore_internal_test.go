package chain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

func newTestSealedStore(t *testing.T) (*sealedStore, *MemStore) {
	t.Helper()
	ring, err := newRandomKeyring(nil)
	if err != nil {
		t.Fatal(err)
	}
	raw := NewMemStore()
	return newSealedStore(raw, ring.keys), raw
}

// Every object an encrypted version 2 repository stores through its
// sealedStore is sealed, but the config, key objects and packs (sealed
// inside); each reads back as written, through Get, ReadAt, Stat and List.
func TestSealedStoreSealsEveryObject(t *testing.T) {
	ctx := context.Background()
	s, raw := newTestSealedStore(t)
	index := bytes.Repeat([]byte("INDEX-PLAINTEXT-"), 5000) // 80,000 bytes: five segments
	objects := map[string][]byte{
		"manifests/vm/20261123":         []byte(`{"collection":"MANIFEST-PLAINTEXT"}`),
		"state/vm":                      []byte("STATE-PLAINTEXT"),
		"logs/vm/1.jsonl":               []byte("LOG-PLAINTEXT"),
		"garbage/1-00":                  []byte(`{"packs":["GARBAGE-PLAINTEXT"]}`),
		"locks/0011":                    []byte(`{"operation":"LOCK-PLAINTEXT"}`),
		"future/object":                 []byte("FUTURE-PLAINTEXT"),
		"index/" + Hash(index).String(): index,
	}
	asIs := map[string][]byte{
		"config":     []byte("CONFIG-PLAINTEXT"),
		"keys/00aa":  []byte("KEY-PLAINTEXT"),
		"packs/ab/c": []byte("PACK-BYTES"),
	}
	for name, data := range objects {
		if err := s.Put(ctx, name, data); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range asIs {
		if err := s.PutIfAbsent(ctx, name, data); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range objects {
		stored, _ := raw.Get(ctx, name)
		if bytes.Contains(stored, data[:min(len(data), 16)]) || bytes.Contains(stored, []byte("PLAINTEXT")) {
			t.Errorf("%s is stored in the clear", name)
		}
		got, err := s.Get(ctx, name)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("Get %s: %q, %v", name, got[:min(len(got), 40)], err)
		}
		part := make([]byte, 5)
		if err := s.ReadAt(ctx, name, part, int64(len(data)-5)); err != nil || !bytes.Equal(part, data[len(data)-5:]) {
			t.Errorf("ReadAt %s: %q, %v", name, part, err)
		}
		if err := s.ReadAt(ctx, name, part, int64(len(data)-4)); err == nil {
			t.Errorf("ReadAt past the end of %s succeeded", name)
		}
		if info, err := s.Stat(ctx, name); err != nil || sealingOf(name) == sealedFile && info.Size != int64(len(data)) {
			t.Errorf("Stat %s: %+v, %v; plaintext %d bytes", name, info, err, len(data))
		}
	}
	for name, data := range asIs {
		if stored, _ := raw.Get(ctx, name); !bytes.Equal(stored, data) {
			t.Errorf("%s is not stored as it is: %q", name, stored)
		}
	}
	s.List(ctx, indexPrefix, func(info ObjectInfo) error {
		if info.Size != int64(len(index)) {
			t.Errorf("List reports %s at %d bytes, its plaintext is %d", info.Name, info.Size, len(index))
		}
		return nil
	})
	// A range of a sealed index file reads only the segments it covers,
	// after the header and final segment are read once.
	name := "index/" + Hash(index).String()
	counting := &storeReadCounter{Store: raw}
	cs := newSealedStore(counting, s.keys)
	p := make([]byte, 3000)
	if err := cs.ReadAt(ctx, name, p, 40_000); err != nil || !bytes.Equal(p, index[40_000:43_000]) {
		t.Fatalf("ReadAt of a sealed index file: %v", err)
	}
	counting.bytes = 0
	if err := cs.ReadAt(ctx, name, p, 20_000); err != nil || !bytes.Equal(p, index[20_000:23_000]) {
		t.Fatalf("ReadAt of a sealed index file: %v", err)
	}
	if seg := int64(1)<<defaultSegmentShift + 16; counting.bytes > 2*seg {
		t.Errorf("a 3000-byte read of an opened index file read %d stored bytes, more than the two segments it may straddle (%d)", counting.bytes, 2*seg)
	}
}

type storeReadCounter struct {
	Store
	bytes int64
}

func (c *storeReadCounter) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	c.bytes += int64(len(p))
	return c.Store.ReadAt(ctx, name, p, off)
}

// Any byte changed in a sealed object, or a sealed object stored under
// another name, is ErrCorrupt naming the object: never a panic, never
// other bytes.
func TestSealedStoreDamageIsCorrupt(t *testing.T) {
	ctx := context.Background()
	s, raw := newTestSealedStore(t)
	index := bytes.Repeat([]byte("0123456789abcdef"), 2500)
	objects := map[string][]byte{
		"manifests/vm/1":                []byte(`{"collection":"vm"}`),
		"state/vm":                      []byte("state"),
		"logs/vm/1.jsonl":               []byte("log"),
		"garbage/1-00":                  []byte(`{"packs":[]}`),
		"locks/0011":                    []byte(`{"operation":"gc"}`),
		"index/" + Hash(index).String(): index,
	}
	for name, data := range objects {
		if err := s.Put(ctx, name, data); err != nil {
			t.Fatal(err)
		}
	}
	isCorrupt := func(what, name string, err error) {
		t.Helper()
		var ce *CorruptError
		if !errors.As(err, &ce) || ce.Object != name {
			t.Errorf("%s: %v, want ErrCorrupt naming %s", what, err, name)
		}
	}
	for name, data := range objects {
		stored, _ := raw.Get(ctx, name)
		step := max(1, len(stored)/97)
		for i := 0; i < len(stored); i += step {
			damaged := bytes.Clone(stored)
			damaged[i] ^= 0x10
			raw.Put(ctx, name, damaged)
			s.forget(name)
			_, err := s.Get(ctx, name)
			isCorrupt(fmt.Sprintf("Get %s with byte %d changed", name, i), name, err)
			if sealingOf(name) == sealedFile {
				// A read anywhere: either the damaged segment, or the final
				// one (checked on opening), must refuse it; a read of a sound
				// segment of a file whose header and end are sound may pass,
				// and then returns the right bytes.
				p := make([]byte, 100)
				for _, off := range []int64{0, int64(i - sealedFileHeaderSize), int64(len(data) - 100)} {
					off = max(0, min(off, int64(len(data)-100)))
					err := s.ReadAt(ctx, name, p, off)
					if err == nil && !bytes.Equal(p, data[off:off+100]) {
						t.Fatalf("ReadAt %s at %d with byte %d changed: wrong bytes", name, off, i)
					}
					if err != nil {
						isCorrupt(fmt.Sprintf("ReadAt %s at %d with byte %d changed", name, off, i), name, err)
					}
				}
			}
		}
		raw.Put(ctx, name, stored)
		s.forget(name)
	}
	// Sealed bytes moved under another name do not open there.
	stored, _ := raw.Get(ctx, "state/vm")
	raw.Put(ctx, "state/other", stored)
	_, err := s.Get(ctx, "state/other")
	isCorrupt("state/vm stored as state/other", "state/other", err)
	stored, _ = raw.Get(ctx, "manifests/vm/1")
	raw.Put(ctx, "locks/0022", stored)
	_, err = s.Get(ctx, "locks/0022")
	isCorrupt("a manifest stored as a lock", "locks/0022", err)
	// Plaintext written under a sealed name is refused.
	raw.Put(ctx, "state/plain", []byte("not sealed at all, but long enough to hold a nonce and a tag"))
	_, err = s.Get(ctx, "state/plain")
	isCorrupt("plaintext state", "state/plain", err)
}

// BenchmarkSealedIndexLookup looks blobs up (hits) in one full index v2
// file in a MemStore, stored plain or sealed, read through the store as a
// repository reads it: what sealing costs a lookup.
func BenchmarkSealedIndexLookup(b *testing.B) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(5, 6))
	entries := randomIndexEntries(rng, maxIndexEntries, randomIDs(rng, 1024))
	data, err := encodeIndexV2(entries, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	name := indexPrefix + Hash(data).String()
	ring, err := newRandomKeyring(nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, sealed := range []bool{false, true} {
		b.Run(map[bool]string{false: "plain", true: "sealed"}[sealed], func(b *testing.B) {
			var store Store = NewMemStore()
			if sealed {
				store = newSealedStore(store, ring.keys)
			}
			if err := store.Put(ctx, name, data); err != nil {
				b.Fatal(err)
			}
			info, err := store.Stat(ctx, name)
			if err != nil {
				b.Fatal(err)
			}
			r, err := openIndexV2(ctx, name, storeObjectRange{store, name}, info.Size)
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, _, ok, err := r.lookup(ctx, entries[(i*7919)%len(entries)].ID); !ok || err != nil {
					b.Fatalf("lookup: %v %v", ok, err)
				}
			}
		})
	}
}
