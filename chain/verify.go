package chain

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
)

// VerifyReport says what Verify checked and what it found damaged.
type VerifyReport struct {
	IndexFiles     int      `json:"index_files"`
	Packs          int      `json:"packs"`
	Blobs          int      `json:"blobs"`
	BytesRead      int64    `json:"bytes_read"`
	RestorePoints  int      `json:"restore_points"`
	UnindexedPacks int      `json:"unindexed_packs"` // garbage from failed creates; GC removes it
	Damage         []Damage `json:"damage"`
}

// Damage is one damaged or missing object and the restore points that need it.
type Damage struct {
	Object        string   `json:"object"`
	Reason        string   `json:"reason"`
	RestorePoints []string `json:"restore_points"` // "collection/id"
	// DataBlobs are the chunks this damage makes unreadable: what a repair
	// from a disk that still holds them would re-store.
	DataBlobs []ID `json:"data_blobs,omitempty"`
}

// OK reports whether nothing is damaged.
func (r VerifyReport) OK() bool { return len(r.Damage) == 0 }

// VerifyOptions tunes Verify.
type VerifyOptions struct {
	// Progress, if set, is called with the pack bytes read so far and the total.
	Progress func(done, total int64)
}

// Verify reads every pack, decompresses and re-hashes every blob, checks
// every index file against its name, and walks every restore point's block
// map to check that each node and chunk it needs is present and sound. It
// reports each damaged object with the restore points it affects; an error
// means Verify itself could not run.
func (r *Repository) Verify(ctx context.Context, opts VerifyOptions) (VerifyReport, error) {
	var report VerifyReport
	lock, err := r.lock(ctx, false, "verify")
	if err != nil {
		return report, fmt.Errorf("verify: %w", err)
	}
	defer lock.unlock()

	v := &verifier{repo: r, damage: map[string]*Damage{}, badBlobs: map[ID]string{}}
	// The restore points first, then the index, so that both are one view: a
	// manifest is committed only once the index files of its blobs are
	// durable, and our shared lock keeps GC from removing any until we are
	// done, so an index loaded after the manifests were read has every blob
	// they need. (Loaded before, it lacks the blobs of points committed in
	// between, which would show as missing.)
	points, err := v.readRestorePoints(ctx, &report)
	if err != nil {
		return report, err
	}
	state, err := loadIndexState(ctx, r.store, r.Logger())
	if err != nil {
		return report, fmt.Errorf("verify: %w", err)
	}
	garbage, err := loadGarbage(ctx, r.store)
	if err != nil {
		return report, fmt.Errorf("verify: %w", err)
	}
	v.checkIndex(state, garbage, &report)
	// Verify reads through the index it loaded and never installs it as the
	// repository's: writers in this process keep adding to theirs meanwhile.
	idx := state.idx
	if err := v.checkPacks(ctx, idx, state.stored, opts, &report); err != nil {
		return report, err
	}
	if err := v.checkRestorePoints(ctx, r.readingThrough(idx), idx, points); err != nil {
		return report, err
	}
	if v.err != nil {
		return report, fmt.Errorf("verify: %w", v.err)
	}
	for _, d := range v.damage {
		sort.Strings(d.RestorePoints)
		report.Damage = append(report.Damage, *d)
	}
	sort.Slice(report.Damage, func(i, j int) bool { return report.Damage[i].Object < report.Damage[j].Object })
	return report, nil
}

type verifier struct {
	repo     *Repository
	mu       sync.Mutex
	damage   map[string]*Damage
	badBlobs map[ID]string // blob → the damaged object that holds it
	err      error         // the first read that failed without showing damage
}

func (v *verifier) found(object, reason string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.damage[object]; !ok {
		v.damage[object] = &Damage{Object: object, Reason: reason}
	}
}

func (v *verifier) badBlob(id ID, t BlobType, object, reason string) {
	v.found(object, reason)
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, seen := v.badBlobs[id]; seen {
		return
	}
	v.badBlobs[id] = object
	if t == DataBlob {
		v.damage[object].DataBlobs = append(v.damage[object].DataBlobs, id)
	}
}

// checkIndex reports what loading the index found: damaged index files,
// and packs that no index lists (recovered from their own headers: garbage
// of a failed create, or the packs of a lost index file), other than those
// a GC left for readers (listed in garbage records).
func (v *verifier) checkIndex(state *indexState, garbage map[string]garbageRecord, report *VerifyReport) {
	report.IndexFiles = len(state.files)
	deferred := map[ID]bool{}
	for _, g := range garbage {
		for _, id := range g.Packs {
			deferred[id] = true
		}
	}
	for _, id := range state.recovered {
		if !deferred[id] {
			report.UnindexedPacks++
		}
	}
	for name, err := range state.damaged {
		v.found(name, err.Error())
	}
	for id, err := range state.unreadable {
		v.found("pack "+id.String(), "no index lists it and its header is damaged: "+err.Error())
	}
}

// readingThrough returns a view of r that reads blobs through idx instead
// of r's own index. It is for reading only: it holds no locks.
func (r *Repository) readingThrough(idx *index) *Repository {
	return &Repository{store: r.store, config: r.config, keys: r.keys, idx: idx}
}

// checkPacks reads every stored pack and checks every blob the index places
// in it.
func (v *verifier) checkPacks(ctx context.Context, idx *index, stored map[ID]int64, opts VerifyOptions, report *VerifyReport) error {
	byPack := idx.packEntries()
	var total int64
	for id, size := range stored {
		if _, ok := byPack[id]; ok {
			total += size
		}
	}
	for id, entries := range byPack {
		if _, ok := stored[id]; !ok {
			for _, e := range entries {
				v.badBlob(e.ID, e.Type, "pack "+id.String(), "missing: the index lists it but the store does not have it")
			}
		}
	}
	var done, blobs atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for id, entries := range byPack {
		size, ok := stored[id]
		if !ok {
			continue
		}
		report.Packs++
		g.Go(func() error {
			if err := v.checkPack(gctx, id, size, entries); err != nil {
				return err
			}
			blobs.Add(int64(len(entries)))
			n := done.Add(size)
			if opts.Progress != nil {
				v.mu.Lock()
				opts.Progress(n, total)
				v.mu.Unlock()
			}
			return nil
		})
	}
	err := g.Wait()
	report.BytesRead, report.Blobs = done.Load(), int(blobs.Load())
	return err
}

func (v *verifier) checkPack(ctx context.Context, id ID, size int64, entries []PackEntry) error {
	name := packName(id)
	data, err := v.repo.store.Get(ctx, name)
	if err != nil {
		if couldNotCheck(ctx, err) {
			return fmt.Errorf("verify: %w", err)
		}
		for _, e := range entries {
			v.badBlob(e.ID, e.Type, "pack "+id.String(), "unreadable: "+err.Error())
		}
		return nil
	}
	if Hash(data) != id {
		v.found("pack "+id.String(), fmt.Sprintf("content does not match its name (%d bytes, listed as %d)", len(data), size))
	}
	if err := checkPackHeader(data, entries); err != nil {
		v.found("pack "+id.String(), err.Error())
	}
	var buf []byte
	for _, e := range entries {
		object := fmt.Sprintf("%s blob %s in pack %s", e.Type, e.ID, id)
		end := int64(e.Offset) + int64(e.Length)
		if end > int64(len(data)) {
			v.badBlob(e.ID, e.Type, object, "past the end of the pack")
			continue
		}
		raw, err := v.repo.decodeStored(buf, data[e.Offset:end], e)
		if err != nil {
			v.badBlob(e.ID, e.Type, object, err.Error())
			continue
		}
		buf = raw
	}
	return nil
}

// checkPackHeader checks that the pack's own header agrees with the index.
func checkPackHeader(data []byte, entries []PackEntry) error {
	if len(data) < packTrailerSize {
		return errors.New("too short for a pack trailer")
	}
	n, err := packHeaderLength(data[len(data)-packTrailerSize:], int64(len(data)))
	if err != nil {
		return err
	}
	dataSize := int64(len(data) - packTrailerSize - n)
	header, err := decodePackHeader(data[dataSize:len(data)-packTrailerSize], dataSize)
	if err != nil {
		return err
	}
	own := map[ID]PackEntry{}
	for _, e := range header {
		own[e.ID] = e
	}
	for _, e := range entries {
		if h, ok := own[e.ID]; !ok || h != e {
			return fmt.Errorf("pack header disagrees with the index about blob %s", e.ID.Short())
		}
	}
	return nil
}

// restorePoint is a manifest as Verify read it, or the error reading it.
type restorePoint struct {
	name     string // the manifest's object name
	manifest *Manifest
	err      error
}

// readRestorePoints lists and reads every manifest. One deleted between the
// listing and the reading is left out: it is no longer a restore point.
func (v *verifier) readRestorePoints(ctx context.Context, report *VerifyReport) ([]restorePoint, error) {
	names, err := listNames(ctx, v.repo.store, manifestPrefix)
	if err != nil {
		return nil, fmt.Errorf("verify: list restore points: %w", err)
	}
	sort.Strings(names)
	var points []restorePoint
	for _, name := range names {
		m, err := v.repo.readManifest(ctx, name)
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if couldNotCheck(ctx, err) {
				return nil, fmt.Errorf("verify: %w", err)
			}
		}
		points = append(points, restorePoint{name: name, manifest: m, err: err})
	}
	report.RestorePoints = len(points)
	return points, nil
}

// checkRestorePoints walks every block map, marking each restore point that
// needs a damaged or missing object. view reads tree nodes through idx. A
// subtree's verdict is remembered by node ID, so maps that share nodes are
// checked once.
func (v *verifier) checkRestorePoints(ctx context.Context, view *Repository, idx *index, points []restorePoint) error {
	memo := map[ID][]string{}
	for _, p := range points {
		point := strings.TrimPrefix(p.name, manifestPrefix)
		if p.err != nil {
			v.found(p.name, p.err.Error())
			v.damage[p.name].RestorePoints = []string{point}
			continue
		}
		m := p.manifest
		var bad []string
		if !m.Config.IsZero() {
			bad = append(bad, v.blobDamage(idx, DataBlob, m.Config)...)
		}
		for _, d := range m.Disks {
			if err := ctx.Err(); err != nil {
				return err
			}
			bad = append(bad, v.subtreeDamage(ctx, idx, view.OpenTree(d), d.Root, d.Geometry(v.repo.config.TreeFanout).Height(), 0, memo)...)
		}
		for _, object := range bad {
			d := v.damage[object]
			if len(d.RestorePoints) == 0 || d.RestorePoints[len(d.RestorePoints)-1] != point {
				d.RestorePoints = append(d.RestorePoints, point)
			}
		}
	}
	return nil
}

// blobDamage returns the damaged object the blob depends on, if any.
func (v *verifier) blobDamage(idx *index, t BlobType, id ID) []string {
	if object, ok := v.badBlobs[id]; ok {
		return []string{object}
	}
	loc, _, ok := idx.lookup(id)
	if !ok || loc.typ != t {
		object := fmt.Sprintf("%s blob %s", t, id)
		v.badBlob(id, t, object, "missing: no index or pack has it")
		return []string{object}
	}
	return nil
}

func (v *verifier) subtreeDamage(ctx context.Context, idx *index, t *TreeReader, id ID, level int, n int64, memo map[ID][]string) []string {
	if id.IsZero() {
		return nil
	}
	if bad, ok := memo[id]; ok {
		return bad
	}
	bad := v.blobDamage(idx, TreeBlob, id)
	if bad == nil {
		ids, err := t.node(ctx, id, level, n, false)
		switch {
		case err != nil && couldNotCheck(ctx, err):
			v.fail(err) // not damage: Verify fails at the end instead
		case err != nil:
			object := "tree blob " + id.String()
			v.found(object, err.Error())
			bad = []string{object}
		case level == 0:
			for _, b := range ids {
				if !b.IsZero() {
					bad = append(bad, v.blobDamage(idx, DataBlob, b)...)
				}
			}
		default:
			for i, child := range ids {
				bad = append(bad, v.subtreeDamage(ctx, idx, t, child, level-1, n*int64(t.g.Fanout)+int64(i), memo)...)
			}
		}
	}
	bad = dedupStrings(bad)
	memo[id] = bad
	return bad
}

// couldNotCheck reports whether a read failed for a reason that says
// nothing about the object: the store or the caller gave up (EIO, a
// timeout, a 503, a cancelled ctx). Only bytes read and found wrong, or an
// object that is missing, are damage; anything else means Verify could not
// check, and it says so as an error rather than report damage that may not
// be there.
func couldNotCheck(ctx context.Context, err error) bool {
	return ctx.Err() != nil || !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNotFound)
}

// fail records the first error that kept Verify from checking something.
func (v *verifier) fail(err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.err == nil {
		v.err = err
	}
}

func dedupStrings(s []string) []string {
	if len(s) < 2 {
		return s
	}
	sort.Strings(s)
	out := s[:1]
	for _, x := range s[1:] {
		if x != out[len(out)-1] {
			out = append(out, x)
		}
	}
	return out
}
