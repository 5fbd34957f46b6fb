package chain_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
)

// newV2RepoOn makes a version 2 repository in store, whatever
// DISKPOINT_TEST_FORMAT says: compaction is of version 2's index files.
func newV2RepoOn(t *testing.T, store chain.Store) *chain.Repository {
	t.Helper()
	cfg, err := chain.NewConfig(0)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Version, cfg.TreeFanout, cfg.PackSize = chain.FormatVersion2, 4, 1<<20
	repo, err := chain.Init(context.Background(), store, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return repo
}

// point is a restore point a test committed, and the bytes of its blocks.
type point struct {
	m      *chain.Manifest
	blocks []chain.ID
	data   map[chain.ID][]byte
}

// createSmallPoint commits a restore point of a small disk of unique blocks
// (so that its create writes an index file), as a create does. It only
// returns errors, so that goroutines may call it.
func createSmallPoint(ctx context.Context, repo *chain.Repository, collection, id string, seed uint64) (point, error) {
	rng := rand.New(rand.NewPCG(seed, 7))
	p := point{data: map[chain.ID][]byte{}}
	for range 6 {
		b := make([]byte, 200)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		id := chain.Hash(b)
		p.blocks = append(p.blocks, id)
		p.data[id] = b
	}
	w, err := repo.NewWriter(ctx, "create")
	if err != nil {
		return p, err
	}
	defer w.Close()
	fanout := repo.Config().TreeFanout
	g := chain.Geometry{Size: int64(len(p.blocks)) * chain.DefaultBlockSize, BlockSize: chain.DefaultBlockSize, Fanout: fanout}
	b := chain.NewTreeBuilder(w, g)
	for j := int64(0); j < g.Leaves(); j++ {
		leaf := p.blocks[j*int64(fanout) : j*int64(fanout)+int64(g.LeafBlocks(j))]
		for _, id := range leaf {
			if _, err := w.PutBlob(ctx, chain.DataBlob, id, p.data[id]); err != nil {
				return p, err
			}
		}
		if err := b.AddLeaf(ctx, leaf); err != nil {
			return p, err
		}
	}
	root, err := b.Finish(ctx)
	if err != nil {
		return p, err
	}
	p.m = &chain.Manifest{ID: id, Collection: collection, Created: time.Now().UTC(), Consistency: "crash",
		Disks: []chain.DiskManifest{{Name: "disk", Size: g.Size, BlockSize: g.BlockSize, Root: root}}}
	return p, w.SaveManifest(ctx, p.m)
}

// restores checks that p reads back from repo bit-exact.
func (p point) restores(ctx context.Context, repo *chain.Repository) error {
	tr := repo.OpenTree(p.m.Disks[0])
	var got []chain.ID
	for j := int64(0); j < tr.Geometry().Leaves(); j++ {
		ids, err := tr.Leaf(ctx, j, nil)
		if err != nil {
			return fmt.Errorf("%s: leaf %d: %w", p.m.ID, j, err)
		}
		got = append(got, ids...)
	}
	if len(got) != len(p.blocks) {
		return fmt.Errorf("%s: %d blocks, want %d", p.m.ID, len(got), len(p.blocks))
	}
	for i, id := range got {
		if id != p.blocks[i] {
			return fmt.Errorf("%s: block %d is %s, want %s", p.m.ID, i, id.Short(), p.blocks[i].Short())
		}
		b, err := repo.ReadBlob(ctx, chain.DataBlob, id, nil)
		if err != nil {
			return fmt.Errorf("%s: block %d: %w", p.m.ID, i, err)
		}
		if !bytes.Equal(b, p.data[id]) {
			return fmt.Errorf("%s: block %d reads back other bytes", p.m.ID, i)
		}
	}
	return nil
}

// checkWhole opens store afresh and checks that it verifies clean and that
// every point restores bit-exact.
func checkWhole(t *testing.T, store chain.Store, points []point) {
	t.Helper()
	ctx := context.Background()
	repo, err := chain.Open(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	report, err := repo.Verify(ctx, chain.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !report.OK() {
		t.Fatalf("verify: %+v", report.Damage)
	}
	for _, p := range points {
		if err := p.restores(ctx, repo); err != nil {
			t.Fatal(err)
		}
	}
}

// Many creates, each writing an index file of its own, leave at most
// indexCompactAt small index files of each tier: the writers compact after
// committing.
func TestIndexCompactionBoundsIndexFiles(t *testing.T) {
	const at = 4
	defer quickLocks()()
	defer chain.SetIndexCompactAt(at)()
	ctx := context.Background()
	store := chain.NewMemStore()
	newV2RepoOn(t, store)
	var points []point
	most := 0
	for i := range 40 {
		repo, err := chain.Open(ctx, store, nil) // a process per create
		if err != nil {
			t.Fatal(err)
		}
		p, err := createSmallPoint(ctx, repo, "vm", fmt.Sprintf("p%02d", i), uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		points = append(points, p)
		most = max(most, mostIndexFilesOfATier(t, store))
	}
	if most > at {
		t.Errorf("up to %d index files of one tier after 40 creates; want at most %d", most, at)
	}
	checkWhole(t, store, points)
}

// indexReads counts the index objects read, and how often.
type indexObjectReads struct {
	chain.Store
	mu    sync.Mutex
	reads map[string]int
}

func (s *indexObjectReads) note(name string) {
	if strings.HasPrefix(name, "index/") {
		s.mu.Lock()
		s.reads[name]++
		s.mu.Unlock()
	}
}

func (s *indexObjectReads) Get(ctx context.Context, name string) ([]byte, error) {
	s.note(name)
	return s.Store.Get(ctx, name)
}

func (s *indexObjectReads) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	s.note(name)
	return s.Store.ReadAt(ctx, name, p, off)
}

// A create after many creates opens a bounded number of index files, not
// one per earlier create: what makes a create after 10,000 restore points
// cost what one after a single point does.
func TestCreateAfterManyCreatesOpensBoundedIndexFiles(t *testing.T) {
	const at = 4
	defer quickLocks()()
	defer chain.SetIndexCompactAt(at)()
	ctx := context.Background()
	store := chain.NewMemStore()
	repo := newV2RepoOn(t, store)
	for i := range 60 {
		if _, err := createSmallPoint(ctx, repo, "vm", fmt.Sprintf("p%02d", i), uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	counted := &indexObjectReads{Store: store, reads: map[string]int{}}
	again, err := chain.Open(ctx, counted, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := createSmallPoint(ctx, again, "vm", "last", 1000)
	if err != nil {
		t.Fatal(err)
	}
	// The files listed at the start, and the one the create wrote, which
	// may have been compacted with them.
	if n := len(counted.reads); n > at+2 {
		t.Errorf("the create read %d index files after 60 creates; want at most %d", n, at+2)
	}
	if err := p.restores(ctx, again); err != nil {
		t.Fatal(err)
	}
}

// Creates in several processes (repositories of their own over one
// store), each compacting after it commits, and readers that loaded the
// index before the files they opened were merged away, never lose a blob:
// every point restores bit-exact throughout, a verify beside them finds
// nothing damaged, and all verifies clean after.
func TestIndexCompactionBesideCreatesAndReads(t *testing.T) {
	defer chain.SetIndexCompactAt(2)()
	defer quickLocks()()
	ctx := context.Background()
	store := chain.NewMemStore()
	newV2RepoOn(t, store)
	first, err := createSmallPoint(ctx, newV2Open(t, store), "vm", "first", 1)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	points := []point{first}
	committed := func() []point {
		mu.Lock()
		defer mu.Unlock()
		return append([]point(nil), points...)
	}
	var errs []error
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	const writers, creates = 3, 8
	var wg, writing sync.WaitGroup
	var stop atomic.Bool
	for w := range writers {
		repo := newV2Open(t, store)
		writing.Add(1)
		wg.Go(func() {
			defer writing.Done()
			for i := range creates {
				p, err := createSmallPoint(ctx, repo, fmt.Sprintf("vm%d", w), fmt.Sprintf("p%02d", i), uint64(100*w+i+2))
				if err != nil {
					fail(fmt.Errorf("writer %d create %d: %w", w, i, err))
					return
				}
				mu.Lock()
				points = append(points, p)
				mu.Unlock()
			}
		})
	}
	for r := range 2 {
		// Loaded now: the files it opens are merged away as it reads.
		repo := newV2Open(t, store)
		if err := repo.LoadIndex(ctx); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for !stop.Load() {
				for _, p := range committed() {
					if err := p.restores(ctx, repo); err != nil {
						fail(fmt.Errorf("reader %d: %w", r, err))
						return
					}
				}
			}
		})
	}
	// And a verify beside them, whose index files are merged away as it
	// reads them: what it reports is damage, and there is none.
	verifier := newV2Open(t, store)
	wg.Go(func() {
		for !stop.Load() {
			report, err := verifier.Verify(ctx, chain.VerifyOptions{})
			if err != nil {
				fail(fmt.Errorf("verify: %w", err))
				return
			}
			if !report.OK() {
				fail(fmt.Errorf("verify beside compactions: %+v", report.Damage))
				return
			}
		}
	})
	writing.Wait()
	stop.Store(true)
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	if n := mostIndexFilesOfATier(t, store); n > 2+writers {
		t.Errorf("%d index files of one tier after %d creates; want at most %d", n, writers*creates+1, 2+writers)
	}
	checkWhole(t, store, committed())
}

// quickLocks makes locks settle in a millisecond, so that the many
// creates of these tests take little time.
func quickLocks() (restore func()) {
	return chain.SetLockTiming(time.Minute, time.Hour, time.Millisecond)
}

// newV2Open opens the repository in store, as another process would.
func newV2Open(t *testing.T, store chain.Store) *chain.Repository {
	t.Helper()
	repo, err := chain.Open(context.Background(), store, nil)
	if err != nil {
		t.Fatal(err)
	}
	return repo
}

// failNthMutation fails the nth Put, PutIfAbsent or Delete, and every one
// after it, as a process killed at that point would leave the store.
type failNthMutation struct {
	chain.Store
	n, calls atomic.Int64
}

var errKilled = errors.New("killed")

func (s *failNthMutation) mutate() error {
	if s.calls.Add(1) >= s.n.Load() {
		return errKilled
	}
	return nil
}

func (s *failNthMutation) Put(ctx context.Context, name string, data []byte) error {
	if err := s.mutate(); err != nil {
		return err
	}
	return s.Store.Put(ctx, name, data)
}

func (s *failNthMutation) PutIfAbsent(ctx context.Context, name string, data []byte) error {
	if err := s.mutate(); err != nil {
		return err
	}
	return s.Store.PutIfAbsent(ctx, name, data)
}

func (s *failNthMutation) Delete(ctx context.Context, name string) error {
	if err := s.mutate(); err != nil {
		return err
	}
	return s.Store.Delete(ctx, name)
}

// A compaction killed at any of its writes or deletes leaves a repository
// that opens, verifies clean and restores every point bit-exact.
func TestIndexCompactionKilledHalfway(t *testing.T) {
	defer quickLocks()()
	ctx := context.Background()
	for n := int64(1); ; n++ {
		store := chain.NewMemStore()
		restore := chain.SetIndexCompactAt(1000) // none while the points are made
		repo := newV2RepoOn(t, store)
		var points []point
		for i := range 6 {
			p, err := createSmallPoint(ctx, repo, "vm", fmt.Sprintf("p%d", i), uint64(i))
			if err != nil {
				t.Fatal(err)
			}
			points = append(points, p)
		}
		restore()
		if got := countObjects(t, store, "index/"); got != 6 {
			t.Fatalf("%d index files before the compaction, want 6", got)
		}
		failing := &failNthMutation{Store: store}
		failing.n.Store(n)
		killed, err := chain.Open(ctx, failing, nil)
		if err != nil {
			t.Fatal(err)
		}
		restore = chain.SetIndexCompactAt(2)
		merged, deleted, err := chain.CompactIndex(ctx, killed)
		restore()
		checkWhole(t, store, points)
		if err == nil {
			if merged != 6 || deleted != 6 {
				t.Fatalf("the compaction merged %d files and deleted %d; want 6 and 6", merged, deleted)
			}
			if got := countObjects(t, store, "index/"); got != 1 {
				t.Fatalf("%d index files after a whole compaction, want 1", got)
			}
			if n != 8 { // a merged file written, six inputs deleted
				t.Fatalf("a compaction failing at mutation %d succeeded", n)
			}
			return
		}
		if !errors.Is(err, errKilled) {
			t.Fatalf("killed at mutation %d: %v", n, err)
		}
	}
}

// A process whose index opened files that a compaction elsewhere merged
// away finds every blob still: the lookup that finds a file gone re-lists
// the index instead of reporting an error, a missing blob or damage.
func TestLookupInFilesMergedAwayRelists(t *testing.T) {
	defer quickLocks()()
	ctx := context.Background()
	store := chain.NewMemStore()
	restore := chain.SetIndexCompactAt(1000)
	repo := newV2RepoOn(t, store)
	var points []point
	for i := range 5 {
		p, err := createSmallPoint(ctx, repo, "vm", fmt.Sprintf("p%d", i), uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		points = append(points, p)
	}
	restore()
	stale := newV2Open(t, store)
	if err := stale.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	defer chain.SetIndexCompactAt(2)()
	if merged, deleted, err := chain.CompactIndex(ctx, newV2Open(t, store)); err != nil || merged != 5 || deleted != 5 {
		t.Fatalf("compaction elsewhere: merged %d, deleted %d, %v; want 5, 5", merged, deleted, err)
	}
	for _, p := range points {
		for _, id := range p.blocks {
			if !stale.HasBlob(id) {
				t.Fatalf("blob %s of %s not found through files merged away", id.Short(), p.m.ID)
			}
		}
		if err := p.restores(ctx, stale); err != nil {
			t.Fatal(err)
		}
	}
}

// A compaction that meets an index file damaged past its tables (a
// bucket) leaves it out, for verify to report and GC to rewrite, and
// merges the rest; every point still restores.
func TestIndexCompactionLeavesDamagedFileOut(t *testing.T) {
	defer quickLocks()()
	ctx := context.Background()
	store, first := damagedBucketRepository(t)
	damaged := listIndex(t, store)
	restore := chain.SetIndexCompactAt(1000)
	repo := newV2Open(t, store)
	var points []point
	for i := range 4 {
		p, err := createSmallPoint(ctx, repo, "vm", fmt.Sprintf("q%d", i), uint64(50+i))
		if err != nil {
			t.Fatal(err)
		}
		points = append(points, p)
	}
	restore()
	defer chain.SetIndexCompactAt(2)()
	merged, deleted, err := chain.CompactIndex(ctx, newV2Open(t, store))
	if err != nil || merged != 4 || deleted != 4 {
		t.Fatalf("compaction: merged %d, deleted %d, %v; want the 4 sound files", merged, deleted, err)
	}
	after := listIndex(t, store)
	for name := range damaged {
		if !after[name] {
			t.Errorf("the damaged file %s was deleted", name)
		}
	}
	fresh := newV2Open(t, store)
	if err := readAll(t, fresh, first); err != nil {
		t.Fatal(err)
	}
	for _, p := range points {
		if err := p.restores(ctx, fresh); err != nil {
			t.Fatal(err)
		}
	}
	report, err := fresh.Verify(ctx, chain.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range report.Damage {
		if d.Kind != "index" || !damaged["index/"+d.ID] {
			t.Errorf("damage other than the damaged index file: %+v", d)
		}
	}
}

// A copy into a version 2 repository flushes now and then, writing an
// index file each time: they are compacted as they pile up, not only when
// the copy commits, since each of the copy's lookups asks every file.
func TestCopyCompactsTheTargetsIndexAsItFlushes(t *testing.T) {
	const at = 4
	defer quickLocks()()
	defer chain.SetIndexCompactAt(at)()
	ctx := context.Background()
	srcStore, m := bigPoint(t, 40*256) // 40 leaves: a flush after each, and after each node
	src := newV2Open(t, srcStore)
	dstStore := chain.NewMemStore()
	dst, err := chain.Init(ctx, dstStore, src.Config(), nil) // the same block size and fanout
	if err != nil {
		t.Fatal(err)
	}
	w, err := dst.NewWriter(ctx, "copy")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c := &chain.Copier{From: src, To: w, FlushEvery: 1} // a flush a blob
	if err := c.CopyDisk(ctx, m.Disks[0]); err != nil {
		t.Fatal(err)
	}
	if n := mostIndexFilesOfATier(t, dstStore); n > at+1 {
		t.Errorf("%d index files of one tier in the target before the copy commits; want at most %d", n, at+1)
	}
	if err := w.SaveManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := readAll(t, newV2Open(t, dstStore), m); err != nil {
		t.Fatal(err)
	}
}

// Entries listed twice, by a compaction's output and the inputs it did
// not get to delete, are not dead weight to GC: it decides as it would
// with each listed once.
func TestGCCountsEntriesListedTwiceOnce(t *testing.T) {
	defer quickLocks()()
	ctx := context.Background()
	store := chain.NewMemStore()
	restore := chain.SetIndexCompactAt(1000)
	repo := newV2RepoOn(t, store)
	for i := range 6 {
		if _, err := createSmallPoint(ctx, repo, "vm", fmt.Sprintf("p%d", i), uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	restore()
	before, err := newV2Open(t, store).GC(ctx, chain.GCOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	failing := &failNthMutation{Store: store}
	failing.n.Store(2) // the merged file written, no input deleted
	defer chain.SetIndexCompactAt(2)()
	if _, _, err := chain.CompactIndex(ctx, newV2Open(t, failing)); !errors.Is(err, errKilled) {
		t.Fatalf("compaction: %v, want it killed at its first delete", err)
	}
	after, err := newV2Open(t, store).GC(ctx, chain.GCOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if after.BlobsRemoved != before.BlobsRemoved || after.PacksRepacked != before.PacksRepacked || after.BytesAfter != before.BytesAfter {
		t.Errorf("gc over entries listed twice: %+v; listed once: %+v", after, before)
	}
}

// mostIndexFilesOfATier counts the small index files in store by tier
// (chain.IndexCompactTier) and returns the largest count.
func mostIndexFilesOfATier(t *testing.T, store chain.Store) int {
	t.Helper()
	tiers := map[int]int{}
	err := store.List(context.Background(), "index/", func(info chain.ObjectInfo) error {
		if info.Size < chain.IndexCompactSmallBytes {
			tiers[chain.IndexCompactTier(info.Size)]++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	most := 0
	for _, n := range tiers {
		most = max(most, n)
	}
	return most
}

// indexBytesPut counts the bytes of the index objects put into a store.
type indexBytesPut struct {
	chain.Store
	put atomic.Int64
}

func (s *indexBytesPut) Put(ctx context.Context, name string, data []byte) error {
	if strings.HasPrefix(name, "index/") {
		s.put.Add(int64(len(data)))
	}
	return s.Store.Put(ctx, name, data)
}

// Compaction rewrites each entry a few times, not once per compaction:
// over many creates, the index bytes written with compaction are within
// a small multiple (one write per tier an entry climbs) of the bytes the
// creates' own index files take. Merging every small file together, as
// compaction first did, rewrote the merged file of all earlier creates
// every indexCompactAt creates: 12.8x the creates' bytes here, and growing
// with their number.
func TestIndexCompactionRewritesEachEntryAFewTimes(t *testing.T) {
	const creates = 120
	defer quickLocks()()
	ctx := context.Background()
	written := func(at int) (int64, int) {
		defer chain.SetIndexCompactAt(at)()
		store := &indexBytesPut{Store: chain.NewMemStore()}
		repo := newV2RepoOn(t, store)
		for i := range creates {
			if _, err := createSmallPoint(ctx, repo, "vm", fmt.Sprintf("p%03d", i), uint64(i)); err != nil {
				t.Fatal(err)
			}
		}
		return store.put.Load(), countObjects(t, store, "index/")
	}
	own, _ := written(1 << 20) // no compaction: the creates' own files
	const at = 4
	all, files := written(at)
	ratio := float64(all) / float64(own)
	t.Logf("%d creates: %d index bytes of their own, %d written with compaction at %d (%.1fx), %d files left", creates, own, all, at, ratio, files)
	// Tiers from the smallest file to all of them together: log_4 of 120
	// files is under 4; a write of their own plus one per tier, and one
	// for the slack of outputs that stay in their tier.
	if ratio > 6 {
		t.Errorf("compaction wrote %.1f times the creates' own index bytes; want at most 6", ratio)
	}
}
