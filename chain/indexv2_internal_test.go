package chain

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// randomIndexEntries returns n entries with random IDs, spread over packs.
func randomIndexEntries(rng *rand.Rand, n int, packs []ID) []indexEntry {
	entries := make([]indexEntry, n)
	for i := range entries {
		e := &entries[i]
		e.ID = randomID(rng)
		e.Pack = packs[rng.IntN(len(packs))]
		e.Type = DataBlob
		if rng.IntN(8) == 0 {
			e.Type = TreeBlob
		}
		e.Offset = rng.Uint32N(1 << 30)
		e.RawLength = rng.Uint32N(1<<16) + 1
		e.Length = e.RawLength
		if rng.IntN(2) == 0 {
			e.Compressed = true
			e.Length = rng.Uint32N(e.RawLength) + 1
		}
	}
	return entries
}

func randomID(rng *rand.Rand) ID {
	var id ID
	for i := 0; i < IDSize; i += 8 {
		binary.LittleEndian.PutUint64(id[i:], rng.Uint64())
	}
	return id
}

func randomIDs(rng *rand.Rand, n int) []ID {
	ids := make([]ID, n)
	for i := range ids {
		ids[i] = randomID(rng)
	}
	return ids
}

func sortIndexEntries(entries []indexEntry) {
	slices.SortFunc(entries, func(a, b indexEntry) int { return bytes.Compare(a.ID[:], b.ID[:]) })
}

// countingRange counts the reads of a rangeReader and the largest one.
type countingRange struct {
	rangeReader
	mu      sync.Mutex
	reads   int
	maxRead int
}

func (c *countingRange) ReadAt(ctx context.Context, p []byte, off int64) error {
	c.mu.Lock()
	c.reads++
	c.maxRead = max(c.maxRead, len(p))
	c.mu.Unlock()
	return c.rangeReader.ReadAt(ctx, p, off)
}

func (c *countingRange) reset() {
	c.mu.Lock()
	c.reads, c.maxRead = 0, 0
	c.mu.Unlock()
}

func mustEncodeIndexV2(t testing.TB, entries []indexEntry, written time.Time) []byte {
	t.Helper()
	data, err := encodeIndexV2(entries, written)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func openIndexV2Bytes(t testing.TB, name string, data []byte) (*indexV2Reader, *countingRange) {
	t.Helper()
	src := &countingRange{rangeReader: readerAtRange{bytes.NewReader(data)}}
	r, err := openIndexV2(context.Background(), name, src, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	src.reset()
	return r, src
}

func allIndexV2Entries(t testing.TB, r *indexV2Reader) []indexEntry {
	t.Helper()
	var got []indexEntry
	err := r.iterate(context.Background(), func(pos int, e indexEntry) error {
		if pos != len(got) {
			t.Fatalf("entry %d reported at position %d", len(got), pos)
		}
		got = append(got, e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestIndexV2RoundTrip(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	written := time.Unix(1_800_000_000, 0)
	for _, n := range []int{0, 1, 63, 1000, 5000} {
		packs := randomIDs(rng, 1+n/100)
		entries := randomIndexEntries(rng, n, packs)
		shuffled := slices.Clone(entries)
		data := mustEncodeIndexV2(t, entries, written)
		sortIndexEntries(entries)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if again := mustEncodeIndexV2(t, shuffled, written); !bytes.Equal(again, data) {
			t.Fatalf("%d entries: the same entries in another order make another file", n)
		}

		r, src := openIndexV2Bytes(t, "index/x", data)
		if r.count != n || r.written != written.Unix() {
			t.Fatalf("%d entries: read count %d, written %d", n, r.count, r.written)
		}
		if want := indexV2FanoutBits(n); r.bits != want || (n > 0 && n>>r.bits > 2*indexV2BucketTarget) {
			t.Fatalf("%d entries: fanout of %d bits", n, r.bits)
		}
		var used []ID
		for _, e := range entries {
			if !slices.Contains(used, e.Pack) {
				used = append(used, e.Pack)
			}
		}
		if len(r.packs) != len(used) {
			t.Fatalf("%d entries: packs table of %d, the entries use %d", n, len(r.packs), len(used))
		}
		if got := allIndexV2Entries(t, r); !slices.Equal(got, entries) {
			t.Fatalf("%d entries: iteration differs from the sorted input", n)
		}
		for pos, want := range entries {
			e, gotPos, ok, err := r.lookup(ctx, want.ID)
			if err != nil || !ok || e != want || gotPos != pos {
				t.Fatalf("lookup of entry %d of %d: %+v at %d, %v, %v", pos, n, e, gotPos, ok, err)
			}
		}
		src.reset()
		for _, id := range randomIDs(rng, 1000) {
			if _, _, ok, err := r.lookup(ctx, id); ok || err != nil {
				t.Fatalf("lookup of an absent ID: %v, %v", ok, err)
			}
		}
		if n > 0 && src.reads > 30 {
			t.Errorf("%d entries: 1000 misses read %d buckets", n, src.reads)
		}
	}
}

func TestIndexV2EncodeRefuses(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	packs := randomIDs(rng, 3)
	entries := randomIndexEntries(rng, 10, packs)
	dup := append(slices.Clone(entries), entries[4])
	if _, err := encodeIndexV2(dup, time.Now()); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("a blob listed twice: %v", err)
	}
	bad := slices.Clone(entries)
	bad[2].ID = ZeroID
	if _, err := encodeIndexV2(bad, time.Now()); err == nil {
		t.Error("an entry with the zero ID was accepted")
	}
	bad = slices.Clone(entries)
	bad[7].Type = 9
	if _, err := encodeIndexV2(bad, time.Now()); err == nil {
		t.Error("an entry of unknown type was accepted")
	}
	if _, err := encodeIndexV2(make([]indexEntry, maxIndexEntries+1), time.Now()); err == nil {
		t.Error("more than maxIndexEntries entries were accepted")
	}

	w := newIndexV2Writer(3)
	sortIndexEntries(entries)
	if err := w.add(entries[5]); err != nil {
		t.Fatal(err)
	}
	if err := w.add(entries[4]); err == nil || !strings.Contains(err.Error(), "ascending") {
		t.Errorf("an entry out of order: %v", err)
	}
	if err := errors.Join(w.add(entries[6]), w.add(entries[7])); err != nil {
		t.Fatal(err)
	}
	if err := w.add(entries[8]); err == nil {
		t.Error("a writer took more entries than its limit")
	}
}

// A miss, which is what a create asks about every new block, costs a
// bucket read only when the filter errs: about 1 in 256 files.
func TestIndexV2FilterSavesBucketReads(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(5, 6))
	const files = 4
	perFile := maxIndexEntries // 1M entries in all
	if testing.Short() {
		perFile /= 8
	}
	var readers []*indexV2Reader
	var sources []*countingRange
	var hits []ID
	for f := range files {
		entries := randomIndexEntries(rng, perFile, randomIDs(rng, 1024))
		for i := 0; i < len(entries); i += 64 {
			hits = append(hits, entries[i].ID)
		}
		r, src := openIndexV2Bytes(t, "index/"+string(rune('a'+f)), mustEncodeIndexV2(t, entries, time.Now()))
		filterBytes := float64(len(r.filter.Fingerprints)) / float64(r.count)
		if filterBytes > 1.3 {
			t.Errorf("the filter takes %.3f bytes per entry", filterBytes)
		}
		readers = append(readers, r)
		sources = append(sources, src)
	}
	reads := func() int {
		n := 0
		for _, s := range sources {
			n += s.reads
			s.reset()
		}
		return n
	}

	misses := 100_000
	if testing.Short() {
		misses /= 4
	}
	for _, id := range randomIDs(rng, misses) {
		for _, r := range readers {
			if _, _, ok, err := r.lookup(ctx, id); ok || err != nil {
				t.Fatalf("an absent ID: %v, %v", ok, err)
			}
		}
	}
	missReads := reads()
	rate := float64(missReads) / float64(misses*files)
	t.Logf("%d misses in %d files of %d entries: %d bucket reads, %.3f%% of file lookups", misses, files, perFile, missReads, 100*rate)
	if rate > 0.006 { // BinaryFuse8: 2^-8 ≈ 0.39%; without a filter, 100%
		t.Errorf("misses read a bucket in %.3f%% of file lookups", 100*rate)
	}

	for _, id := range hits {
		found := 0
		for _, r := range readers {
			_, _, ok, err := r.lookup(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				found++
			}
		}
		if found != 1 {
			t.Fatalf("blob %s found in %d files", id.Short(), found)
		}
	}
	hitReads := reads()
	t.Logf("%d hits: %d bucket reads", len(hits), hitReads)
	if extra := hitReads - len(hits); extra < 0 || float64(extra) > 0.006*float64(len(hits)*(files-1)) {
		t.Errorf("%d hits read %d buckets", len(hits), hitReads)
	}
}

// Every single damaged byte of a small file is found: opening fails, or a
// read of the bucket it is in fails. No lookup ever gives a wrong answer,
// and nothing panics.
func TestIndexV2CorruptEveryByte(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(11, 12))
	entries := randomIndexEntries(rng, 150, randomIDs(rng, 5))
	data := mustEncodeIndexV2(t, entries, time.Unix(1_800_000_000, 0))
	sortIndexEntries(entries)
	if bits := indexV2FanoutBits(len(entries)); bits < 2 {
		t.Fatalf("the test wants several buckets, has %d bits", bits)
	}
	const name = "index/damaged"
	isCorrupt := func(err error) bool {
		var ce *CorruptError
		return errors.As(err, &ce) && ce.Object == name
	}
	damaged := make([]byte, len(data))
	for i := range data {
		copy(damaged, data)
		damaged[i] ^= 1 << (i % 8)
		r, err := openIndexV2(ctx, name, readerAtRange{bytes.NewReader(damaged)}, int64(len(damaged)))
		if err != nil {
			if !isCorrupt(err) {
				t.Fatalf("byte %d: open: %v, want ErrCorrupt naming %s", i, err, name)
			}
			continue
		}
		err = r.iterate(ctx, func(int, indexEntry) error { return nil })
		if !isCorrupt(err) {
			t.Fatalf("byte %d: damage not found by reading every bucket: %v", i, err)
		}
		// Damage inside the entries can only mislead a lookup in its own
		// bucket (the tables' damage is found at open): look up all of
		// that bucket and a sample of the others.
		damagedBucket := -1
		if at := int64(i) - r.layout.entries; at >= 0 && at < int64(len(entries))*indexV2EntrySize {
			damagedBucket = indexV2Bucket(&entries[at/indexV2EntrySize].ID, r.bits)
		}
		for pos, want := range entries {
			if pos%16 != 0 && indexV2Bucket(&want.ID, r.bits) != damagedBucket {
				continue
			}
			e, gotPos, ok, err := r.lookup(ctx, want.ID)
			if err != nil {
				if !isCorrupt(err) {
					t.Fatalf("byte %d: lookup: %v", i, err)
				}
				continue
			}
			if !ok || e != want || gotPos != pos {
				t.Fatalf("byte %d: lookup of entry %d gave %+v at %d (%v)", i, pos, e, gotPos, ok)
			}
		}
	}
	for n := range len(data) {
		if _, err := openIndexV2(ctx, name, readerAtRange{bytes.NewReader(data[:n])}, int64(n)); !isCorrupt(err) {
			t.Fatalf("truncated to %d bytes: %v", n, err)
		}
	}
}

// A store that fails is not damage: the reader says which object it could
// not read, and the error is the store's.
func TestIndexV2ReadErrorIsNotCorrupt(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(13, 14))
	entries := randomIndexEntries(rng, 500, randomIDs(rng, 5))
	store := NewMemStore()
	const name = "index/x"
	if err := store.Put(ctx, name, mustEncodeIndexV2(t, entries, time.Now())); err != nil {
		t.Fatal(err)
	}
	info, err := store.Stat(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	r, err := openIndexV2(ctx, name, storeObjectRange{store, name}, info.Size)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok, err := r.lookup(ctx, entries[0].ID); !ok || err != nil {
		t.Fatalf("lookup through the store: %v, %v", ok, err)
	}
	if err := store.Delete(ctx, name); err != nil {
		t.Fatal(err)
	}
	_, _, _, err = r.lookup(ctx, entries[0].ID)
	if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), name) {
		t.Errorf("lookup in a deleted object: %v", err)
	}
	if _, err := openIndexV2(ctx, name, storeObjectRange{store, name}, info.Size); !errors.Is(err, ErrNotFound) {
		t.Errorf("open of a deleted object: %v", err)
	}
}

// The filter's query is part of the format (FORMAT.md spells it out): a
// library upgrade that changed it would make old files deny blobs they
// list. This computes it from the file's bytes as documented and holds the
// library's answers to it.
func TestIndexV2FilterAsDocumented(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	entries := randomIndexEntries(rng, 20_000, randomIDs(rng, 50))
	data := mustEncodeIndexV2(t, entries, time.Now())
	r, _ := openIndexV2Bytes(t, "index/x", data)

	f := data[r.layout.filter:r.layout.trailer]
	seed := binary.LittleEndian.Uint64(f)
	segLen := binary.LittleEndian.Uint32(f[8:])
	segCount := binary.LittleEndian.Uint32(f[12:])
	fingerprints := f[indexV2FilterHeaderSize:]
	mayHold := func(key uint64) bool {
		h := key + seed
		h ^= h >> 33
		h *= 0xff51afd7ed558ccd
		h ^= h >> 33
		h *= 0xc4ceb9fe1a85ec53
		h ^= h >> 33
		fp := byte(h ^ h>>32)
		h0, _ := bits.Mul64(h, uint64(segCount*segLen))
		h1 := (uint32(h0) + segLen) ^ (uint32(h>>18) & (segLen - 1))
		h2 := (uint32(h0) + 2*segLen) ^ (uint32(h) & (segLen - 1))
		return fp^fingerprints[h0]^fingerprints[h1]^fingerprints[h2] == 0
	}
	for _, e := range entries {
		if key := indexV2FilterKey(&e.ID); !mayHold(key) || !r.filter.Contains(key) {
			t.Fatalf("blob %s: the documented query says %v, the library %v", e.ID.Short(), mayHold(key), r.filter.Contains(key))
		}
	}
	passed := 0
	for range 100_000 {
		key := rng.Uint64()
		if mayHold(key) != r.filter.Contains(key) {
			t.Fatalf("key %#x: the documented query says %v, the library %v", key, mayHold(key), r.filter.Contains(key))
		}
		if mayHold(key) {
			passed++
		}
	}
	if passed == 0 || passed > 600 {
		t.Errorf("%d of 100000 absent keys pass the filter", passed)
	}
}

// A reader serves lookups and iterations from many goroutines at once (a
// create's workers share it); run with -race.
func TestIndexV2ConcurrentReaders(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(17, 18))
	entries := randomIndexEntries(rng, 20_000, randomIDs(rng, 50))
	r, _ := openIndexV2Bytes(t, "index/x", mustEncodeIndexV2(t, entries, time.Now()))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			if g == 0 {
				n := 0
				if err := r.iterate(ctx, func(int, indexEntry) error { n++; return nil }); err != nil || n != len(entries) {
					errs <- fmt.Errorf("iterate: %d entries, %v", n, err)
				}
				return
			}
			for i := g; i < len(entries); i += 7 {
				e, pos, ok, err := r.lookup(ctx, entries[i].ID)
				if err != nil || !ok || e != entries[i] || pos != i {
					errs <- fmt.Errorf("lookup of entry %d: %+v at %d, %v, %v", i, e, pos, ok, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A file that is shorter than its reader was told is a failed read
// (io.ErrUnexpectedEOF), not damage; a cancelled context stops lookups
// and merges.
func TestIndexV2ShortReadAndCancel(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(19, 20))
	entries := randomIndexEntries(rng, 2000, randomIDs(rng, 5))
	data := mustEncodeIndexV2(t, entries, time.Now())
	src := &readerAtRange{bytes.NewReader(data)}
	r, err := openIndexV2(ctx, "index/x", src, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	src.r = bytes.NewReader(data[:r.layout.entries+int64(len(entries)/2)*indexV2EntrySize])
	_, _, _, err = r.lookup(ctx, entries[len(entries)-1].ID)
	if !errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrCorrupt) {
		t.Errorf("lookup past the end of a short file: %v", err)
	}
	src.r = bytes.NewReader(data)

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, _, err := r.lookup(cancelled, entries[0].ID); !errors.Is(err, context.Canceled) {
		t.Errorf("lookup with a cancelled context: %v", err)
	}
	if _, err := mergeIndexV2(cancelled, []*indexV2Reader{r}, func(indexEntry) bool { return true }, 0, func(context.Context, []byte) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("merge with a cancelled context: %v", err)
	}
}
