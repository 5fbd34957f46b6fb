package snapshot_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

// corruptionFixture is a repository with points A and B of one disk in
// collection vm (B after scattered changes) and point C of another disk in
// collection other.
type corruptionFixture struct {
	repo    *snapshot.Repository
	dir     string
	points  map[string]*snapshot.RestorePoint // A, B, C
	images  map[string][]byte
	imageA  string // a file holding A's disk, for repairs
	uniqueA chain.ID
}

func newCorruptionFixture(t *testing.T) *corruptionFixture {
	t.Helper()
	return newCorruptionFixtureOf(t, testFormat())
}

// newCorruptionFixtureOf is newCorruptionFixture in a repository of the
// given format version (0: the default).
func newCorruptionFixtureOf(t *testing.T, format int) *corruptionFixture {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	repo, err := snapshot.Init(ctx, dir, snapshot.InitOptions{BlockSize: testBlockSize, Format: format})
	if err != nil {
		t.Fatal(err)
	}
	f := &corruptionFixture{repo: repo, dir: dir, points: map[string]*snapshot.RestorePoint{}, images: map[string][]byte{}}
	vm, _ := repo.Collection("vm")
	other, _ := repo.Collection("other")
	work := t.TempDir()
	disk := makeDisk(t, work, "d.img", 2<<20, 31)
	f.imageA = filepath.Join(work, "a-copy.img")
	for _, step := range []struct {
		name string
		c    *snapshot.Collection
		path string
	}{{"A", vm, disk}, {"B", vm, disk}, {"C", other, makeDisk(t, work, "e.img", 1<<20, 32)}} {
		if step.name == "A" {
			copyFile(t, disk, f.imageA)
		}
		if step.name == "B" {
			demodisk.Scatter(disk, 0.1, 33)
		}
		rp, err := step.c.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: step.path}}})
		if err != nil {
			t.Fatal(err)
		}
		f.points[step.name] = rp
		f.images[step.name] = readFile(t, step.path)
	}
	// A chunk only A uses: in A's map, not in B's.
	inB := map[chain.ID]bool{}
	for _, id := range f.blockIDs(t, "B") {
		inB[id] = true
	}
	for _, id := range f.blockIDs(t, "A") {
		if !id.IsZero() && !inB[id] {
			f.uniqueA = id
			break
		}
	}
	if f.uniqueA.IsZero() {
		t.Fatal("no chunk unique to A")
	}
	return f
}

func (f *corruptionFixture) blockIDs(t *testing.T, point string) []chain.ID {
	t.Helper()
	rp := f.points[point]
	m, err := f.repo.Chain().LoadManifest(context.Background(), rp.Collection, rp.ID)
	if err != nil {
		t.Fatal(err)
	}
	tr := f.repo.Chain().OpenTree(m.Disks[0])
	var ids []chain.ID
	for j := int64(0); j < tr.Geometry().Leaves(); j++ {
		if ids, err = tr.Leaf(context.Background(), j, ids); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

func (f *corruptionFixture) collection(point string) *snapshot.Collection {
	name := "vm"
	if point == "C" {
		name = "other"
	}
	c, _ := f.repo.Collection(name)
	return c
}

// flipAt flips one byte of a stored object.
func flipAt(t *testing.T, path string, off int64) {
	t.Helper()
	b := readFile(t, path)
	b[off] ^= 0x5a
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func (f *corruptionFixture) blobFile(t *testing.T, id chain.ID) (string, chain.BlobLocation) {
	t.Helper()
	loc, ok := f.repo.Chain().LocateBlob(id)
	if !ok {
		t.Fatalf("blob %s not in the index", id.Short())
	}
	return filepath.Join(f.dir, loc.Pack), loc
}

// indexV2Layout is where the sections of a version 2 index file begin, as
// its trailer says (chain/FORMAT.md, "Version 2: index files").
type indexV2Layout struct {
	bits                                               int // fanout bits b
	fanout, checksums, packs, entries, filter, trailer int64
}

// readIndexV2Layout reads the layout of the version 2 index file at path.
func readIndexV2Layout(t *testing.T, path string) (indexV2Layout, []byte) {
	t.Helper()
	b := readFile(t, path)
	if len(b) < 24+56 || string(b[:4]) != "dpi2" || string(b[len(b)-4:]) != "dpi2" {
		t.Fatalf("%s is not a version 2 index file", path)
	}
	trailer := b[len(b)-56:]
	at := func(i int) int64 { return int64(binary.LittleEndian.Uint64(trailer[8*i:])) }
	l := indexV2Layout{bits: int(b[6]), fanout: at(0), checksums: at(1), packs: at(2), entries: at(3), filter: at(4), trailer: at(5)}
	if l.trailer != int64(len(b))-56 {
		t.Fatalf("%s: the trailer says it is at %d, the file has %d bytes", path, l.trailer, len(b))
	}
	return l, b
}

// indexV2Holding returns the version 2 index file that lists blob id and
// the number of its entry there.
func (f *corruptionFixture) indexV2Holding(t *testing.T, id chain.ID) (string, int) {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(f.dir, "index", "*"))
	for _, name := range names {
		l, b := readIndexV2Layout(t, name)
		for off, n := l.entries, 0; off < l.filter; off, n = off+52, n+1 {
			if bytes.Equal(b[off:off+32], id[:]) {
				return name, n
			}
		}
	}
	t.Fatalf("no index file lists blob %s", id.Short())
	return "", 0
}

// rewriteIndexV2Entry changes entry n of the version 2 index file at path
// with change, and stores the file again as a sound one would be: its
// bucket's CRC and the tables' CRC recomputed, named by its new hash. The
// index then says something else than the pack it points into, and
// nothing but the pack can tell.
func rewriteIndexV2Entry(t *testing.T, path string, n int, change func(entry []byte)) string {
	t.Helper()
	l, b := readIndexV2Layout(t, path)
	entry := b[l.entries+52*int64(n) : l.entries+52*int64(n+1)]
	change(entry)
	castagnoli := crc32.MakeTable(crc32.Castagnoli)
	bucket := 0
	if l.bits > 0 {
		bucket = int(binary.BigEndian.Uint32(entry[:4]) >> (32 - l.bits))
	}
	first := uint32(0)
	if bucket > 0 {
		first = binary.LittleEndian.Uint32(b[l.fanout+4*int64(bucket-1):])
	}
	end := binary.LittleEndian.Uint32(b[l.fanout+4*int64(bucket):])
	sum := crc32.Checksum(b[l.entries+52*int64(first):l.entries+52*int64(end)], castagnoli)
	binary.LittleEndian.PutUint32(b[l.checksums+4*int64(bucket):], sum)
	tables := crc32.Update(crc32.Checksum(b[:l.entries], castagnoli), castagnoli, b[l.filter:l.trailer+48])
	binary.LittleEndian.PutUint32(b[l.trailer+48:], tables)
	name := filepath.Join(filepath.Dir(path), chain.Hash(b).String())
	if err := os.WriteFile(name, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	return name
}

// flipIndexV2Section flips a byte in the middle of a section of the
// version 2 index file that lists blob id (an index file every restore
// point of the fixture reads from), and returns the file's object name.
func (f *corruptionFixture) flipIndexV2Section(t *testing.T, id chain.ID, section func(indexV2Layout) (from, to int64)) string {
	t.Helper()
	path, _ := f.indexV2Holding(t, id)
	l, _ := readIndexV2Layout(t, path)
	from, to := section(l)
	if to <= from {
		t.Fatalf("%s: the section is empty (%d to %d)", path, from, to)
	}
	flipAt(t, path, from+(to-from)/2)
	return "index/" + filepath.Base(path)
}

func TestCorruptionIsFoundAndContained(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, f *corruptionFixture) string // returns text the report must name
		hits   []string                                        // restore points that must fail
		// restoreErr is what a failed restore's error wraps: ErrCorrupt
		// when bytes were read and are wrong, ErrNotFound when the store
		// lacks a pack (an I/O failure, which a reader whose index is out
		// of date can retry; verify still reports it as damage).
		restoreErr error
		// format, when not 0, is the format of the repository the row
		// damages, whatever DISKPOINT_TEST_FORMAT says: the rows that
		// damage a part of a version 2 index file.
		format int
		// repair: a repair from A's disk heals what the damage broke, and
		// verify is clean after it.
		repair bool
		// reason, if not "", is what verify must give as the reason of
		// the damage it names.
		reason string
	}{
		{"a chunk in a pack", func(t *testing.T, f *corruptionFixture) string {
			path, loc := f.blobFile(t, f.uniqueA)
			flipAt(t, path, loc.Offset+loc.Length/2)
			return f.uniqueA.String()
		}, []string{"A"}, chain.ErrCorrupt, 0, true, ""},
		{"a block-map node", func(t *testing.T, f *corruptionFixture) string {
			root := f.points["B"].Disks[0].Root
			path, loc := f.blobFile(t, root)
			flipAt(t, path, loc.Offset+loc.Length-1)
			return root.String()
		}, []string{"B"}, chain.ErrCorrupt, 0, false, ""},
		{"a truncated pack", func(t *testing.T, f *corruptionFixture) string {
			path, _ := f.blobFile(t, f.uniqueA)
			os.Truncate(path, 100)
			return filepath.Base(path)
		}, []string{"A"}, chain.ErrCorrupt, 0, true, ""},
		{"a deleted pack", func(t *testing.T, f *corruptionFixture) string {
			path, _ := f.blobFile(t, f.uniqueA)
			os.Remove(path)
			return filepath.Base(path)
		}, []string{"A"}, chain.ErrNotFound, 0, true, ""},
		{"a damaged manifest", func(t *testing.T, f *corruptionFixture) string {
			path := filepath.Join(f.dir, "manifests", "vm", f.points["B"].ID)
			flipAt(t, path, 10)
			return "manifests/vm/" + f.points["B"].ID
		}, []string{"B"}, chain.ErrCorrupt, 0, false, ""},
		{"a damaged index file", func(t *testing.T, f *corruptionFixture) string {
			names, _ := filepath.Glob(filepath.Join(f.dir, "index", "*"))
			flipAt(t, names[0], 5)
			return "index/" + filepath.Base(names[0])
		}, nil, nil, 0, false, ""},
		{"a deleted index file", func(t *testing.T, f *corruptionFixture) string {
			names, _ := filepath.Glob(filepath.Join(f.dir, "index", "*"))
			os.Remove(names[0])
			return ""
		}, nil, nil, 0, false, ""},
		// A version 2 index file, part by part. Each file lists blobs of
		// every point (the fixture's points share chunks), and the one
		// damaged lists A's unique chunk. Opening checks the tables (header,
		// fanout, packs, filter, trailer); a lookup checks its bucket. A
		// damaged file is set aside, its packs recovered from their own
		// headers, so every point still restores; GC replaces it.
		{"a version 2 index file's header", func(t *testing.T, f *corruptionFixture) string {
			return f.flipIndexV2Section(t, f.uniqueA, func(l indexV2Layout) (int64, int64) { return 8, 12 }) // the entry count
		}, nil, nil, 2, false, ""},
		{"a version 2 index file's fanout", func(t *testing.T, f *corruptionFixture) string {
			return f.flipIndexV2Section(t, f.uniqueA, func(l indexV2Layout) (int64, int64) { return l.fanout, l.checksums })
		}, nil, nil, 2, false, ""},
		{"a version 2 index file's bucket", func(t *testing.T, f *corruptionFixture) string {
			path, n := f.indexV2Holding(t, f.uniqueA)
			l, _ := readIndexV2Layout(t, path)
			flipAt(t, path, l.entries+52*int64(n)+40) // the stored length of A's chunk: its bucket's CRC disagrees
			return "index/" + filepath.Base(path)
		}, nil, nil, 2, false, ""},
		{"a version 2 index file's bucket checksum", func(t *testing.T, f *corruptionFixture) string {
			return f.flipIndexV2Section(t, f.uniqueA, func(l indexV2Layout) (int64, int64) { return l.checksums, l.packs })
		}, nil, nil, 2, false, ""},
		{"a version 2 index file's packs table", func(t *testing.T, f *corruptionFixture) string {
			return f.flipIndexV2Section(t, f.uniqueA, func(l indexV2Layout) (int64, int64) { return l.packs, l.entries })
		}, nil, nil, 2, false, ""},
		{"a version 2 index file's filter", func(t *testing.T, f *corruptionFixture) string {
			return f.flipIndexV2Section(t, f.uniqueA, func(l indexV2Layout) (int64, int64) { return l.filter + 16, l.trailer })
		}, nil, nil, 2, false, ""},
		{"a version 2 index file's trailer", func(t *testing.T, f *corruptionFixture) string {
			return f.flipIndexV2Section(t, f.uniqueA, func(l indexV2Layout) (int64, int64) { return l.trailer, l.trailer + 48 })
		}, nil, nil, 2, false, ""},
		{"a truncated version 2 index file", func(t *testing.T, f *corruptionFixture) string {
			path, _ := f.indexV2Holding(t, f.uniqueA)
			l, _ := readIndexV2Layout(t, path)
			os.Truncate(path, l.entries+(l.filter-l.entries)/2)
			return "index/" + filepath.Base(path)
		}, nil, nil, 2, false, ""},
		{"a deleted version 2 index file", func(t *testing.T, f *corruptionFixture) string {
			path, _ := f.indexV2Holding(t, f.uniqueA)
			os.Remove(path)
			return ""
		}, nil, nil, 2, false, ""},
		// A sound version 2 index file that lies: it places A's unique
		// chunk at another offset of its pack than the pack's header
		// does. Only the pack can tell; reading the chunk there fails its
		// check, and a repair from A's disk stores it again.
		{"a pack whose header disagrees with its version 2 index file", func(t *testing.T, f *corruptionFixture) string {
			path, n := f.indexV2Holding(t, f.uniqueA)
			rewriteIndexV2Entry(t, path, n, func(entry []byte) {
				binary.LittleEndian.PutUint32(entry[36:], binary.LittleEndian.Uint32(entry[36:])+1) // its offset
			})
			return f.uniqueA.String()
		}, []string{"A"}, chain.ErrCorrupt, 2, true, "pack header disagrees with the index about blob"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			format := testFormat()
			if tc.format != 0 {
				format = tc.format
			}
			f := newCorruptionFixtureOf(t, format)
			named := tc.damage(t, f)
			repo, err := snapshot.Open(ctx, f.dir) // as the next process would
			if err != nil {
				t.Fatal(err)
			}
			f.repo = repo
			report, err := repo.Verify(ctx, snapshot.VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			affected := map[string]bool{}
			var found, reasonGiven bool
			for _, d := range report.Damage {
				if named != "" && strings.Contains(d.Object, named) {
					found = true
				}
				if tc.reason != "" && strings.Contains(d.Reason, tc.reason) {
					reasonGiven = true
				}
				for _, p := range d.RestorePoints {
					for name, rp := range f.points {
						if strings.HasSuffix(p, "/"+rp.ID) {
							affected[name] = true
						}
					}
				}
			}
			if named != "" && !found {
				t.Fatalf("verify did not name %s: %+v", named, report.Damage)
			}
			if tc.reason != "" && !reasonGiven {
				t.Fatalf("verify did not say %q: %+v", tc.reason, report.Damage)
			}
			for _, name := range tc.hits {
				if !affected[name] {
					t.Errorf("verify does not say that restore point %s is affected: %+v", name, report.Damage)
				}
			}
			for name, rp := range f.points {
				out := filepath.Join(t.TempDir(), name+".img")
				_, err := f.collection(name).RestoreDisk(ctx, snapshot.RestoreOptions{Point: rp.ID, Disk: "d", Path: out})
				if affected[name] {
					if !errors.Is(err, tc.restoreErr) || (named != "" && !strings.Contains(err.Error(), named) && !strings.Contains(err.Error(), "blob")) {
						t.Errorf("restore of affected point %s: %v, want %v naming the damage", name, err, tc.restoreErr)
					}
					if tc.restoreErr != chain.ErrCorrupt && (errors.Is(err, chain.ErrCorrupt) || !strings.Contains(err.Error(), named)) {
						t.Errorf("restore of affected point %s: %v: want the missing pack %s named, and not ErrCorrupt (no bytes were read)", name, err, named)
					}
					if _, serr := os.Stat(out); !os.IsNotExist(serr) {
						t.Errorf("a failed restore of %s left a file", name)
					}
					continue
				}
				if err != nil {
					t.Errorf("restore point %s does not need the damaged object, but: %v", name, err)
				} else if got := readFile(t, out); string(got) != string(f.images[name]) {
					t.Errorf("restore point %s restored wrong data", name)
				}
			}
			// GC never makes it worse: what restored before still does. With
			// a block-map node or a manifest damaged it cannot know what lies
			// below, so it refuses, naming the object, and removes nothing.
			if _, err := repo.GC(ctx, snapshot.GCOptions{}); err != nil {
				if tc.name != "a block-map node" && tc.name != "a damaged manifest" || !errors.Is(err, chain.ErrCorrupt) || !strings.Contains(err.Error(), named) {
					t.Fatalf("gc: %v", err)
				}
			}
			for name, rp := range f.points {
				if affected[name] {
					continue
				}
				restoreAndCompare(t, f.collection(name), rp.ID, "d", f.images[name])
			}
			if len(tc.hits) == 0 { // index damage: GC rewrote the index, all is well again
				if vr, err := repo.Verify(ctx, snapshot.VerifyOptions{}); err != nil || !vr.OK() || vr.UnindexedPacks != 0 {
					t.Errorf("after GC: %+v, %v", vr, err)
				}
			}
			if tc.repair {
				fixed, err := repo.RepairFromDisks(ctx, report, []string{f.imageA})
				if err != nil || fixed.Repaired == 0 || fixed.Found != fixed.Wanted {
					t.Fatalf("repair from A's disk: %+v, %v", fixed, err)
				}
				if vr, err := repo.Verify(ctx, snapshot.VerifyOptions{}); err != nil || !vr.OK() || vr.UnindexedPacks != 0 {
					t.Errorf("verify after the repair: %+v, %v", vr, err)
				}
				for name, rp := range f.points {
					restoreAndCompare(t, f.collection(name), rp.ID, "d", f.images[name])
				}
			}
		})
	}
}

// A damaged chunk is healed from a disk that still holds its bytes.
func TestRepairFromDisk(t *testing.T) {
	ctx := context.Background()
	f := newCorruptionFixture(t)
	path, loc := f.blobFile(t, f.uniqueA)
	flipAt(t, path, loc.Offset+1)
	repo, _ := snapshot.Open(ctx, f.dir)
	report, err := repo.Verify(ctx, snapshot.VerifyOptions{})
	if err != nil || report.OK() {
		t.Fatalf("verify: %+v, %v", report, err)
	}
	// The current disk no longer holds A's bytes; the copy of A's image does.
	fixed, err := repo.RepairFromDisks(ctx, report, []string{f.imageA})
	if err != nil || fixed.Repaired == 0 || fixed.Found != fixed.Wanted {
		t.Fatalf("repair: %+v, %v", fixed, err)
	}
	if vr, err := repo.Verify(ctx, snapshot.VerifyOptions{}); err != nil || !vr.OK() {
		t.Fatalf("verify after repair: %+v, %v", vr, err)
	}
	vm, _ := repo.Collection("vm")
	restoreAndCompare(t, vm, f.points["A"].ID, "d", f.images["A"])
	if _, err := repo.GC(ctx, snapshot.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	restoreAndCompare(t, vm, f.points["A"].ID, "d", f.images["A"])
}

func TestDamagedConfigIsNamed(t *testing.T) {
	_, dir := newRepo(t)
	flipAt(t, filepath.Join(dir, "config"), 3)
	if _, err := snapshot.Open(context.Background(), dir); !errors.Is(err, chain.ErrCorrupt) || !strings.Contains(err.Error(), "config") {
		t.Fatalf("open with a damaged config: %v", err)
	}
}
