package chain

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
)

// VerifyReport says what Verify checked and what it found damaged.
type VerifyReport struct {
	IndexFiles     int   `json:"index_files"`
	Packs          int   `json:"packs"`
	Blobs          int   `json:"blobs"`
	BytesRead      int64 `json:"bytes_read"`
	RestorePoints  int   `json:"restore_points"`
	UnindexedPacks int   `json:"unindexed_packs"` // garbage from failed creates; GC removes it
	// PacksNotRead counts the packs whose data was not read: all of them
	// with StructureOnly, the rest of a ReadData subset. They were checked
	// to exist, and the tree nodes the block maps need were read.
	PacksNotRead int      `json:"packs_not_read"`
	Damage       []Damage `json:"damage"` // never nil
}

// Damage is one damaged or missing object and the restore points that need it.
type Damage struct {
	// Kind, ID and Pack name the object in fields: Kind is "pack",
	// "data_blob", "tree_blob", "index" (ID: the index file's name under
	// index/) or "manifest" (ID: "collection/id"); Pack is, for a blob, the
	// pack the index places it in, when known.
	Kind string `json:"kind"`
	ID   string `json:"id"`
	Pack string `json:"pack,omitempty"`
	// Object is the same name as one phrase, for people and logs: "pack
	// 3fa1…", "data blob 9c0e… in pack 3fa1…", "manifests/vm1/…".
	Object string `json:"-"`
	// Reason says what is wrong with it.
	Reason        string   `json:"reason"`
	RestorePoints []string `json:"restore_points"` // "collection/id"; never nil
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
	// StructureOnly reads no pack's data, as restic check without
	// --read-data: it checks the index files, that every pack the index
	// names exists, and every block map down to its chunks' index entries
	// (tree nodes are read), but not the chunks' bytes.
	StructureOnly bool
	// ReadData, if set, reads the data of only these packs (restic check
	// --read-data-subset); the structure is checked in full.
	ReadData *DataSubset
}

// DataSubset picks the packs whose data a Verify reads: Group of Groups
// (1 <= Group <= Groups; the packs are split into Groups fixed groups by
// ID, so verifying 1/7 through 7/7 on seven days reads everything once), or
// Percent of the packs (0 < Percent <= 100), chosen at random each time.
type DataSubset struct {
	Group, Groups int
	Percent       float64
}

// ParseDataSubset reads "N/M" or "P%", as restic check --read-data-subset.
func ParseDataSubset(s string) (DataSubset, error) {
	if p, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(p, 64)
		if err != nil || !(f > 0 && f <= 100) {
			return DataSubset{}, fmt.Errorf("data subset %q: want a percentage above 0 and at most 100", s)
		}
		return DataSubset{Percent: f}, nil
	}
	n, m, ok := strings.Cut(s, "/")
	group, err1 := strconv.Atoi(n)
	groups, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || groups < 1 || group < 1 || group > groups {
		return DataSubset{}, fmt.Errorf("data subset %q: want N/M with 1 <= N <= M, or P%%", s)
	}
	return DataSubset{Group: group, Groups: groups}, nil
}

// String is the subset as ParseDataSubset reads it.
func (d DataSubset) String() string {
	if d.Groups > 0 {
		return fmt.Sprintf("%d/%d", d.Group, d.Groups)
	}
	return strconv.FormatFloat(d.Percent, 'f', -1, 64) + "%"
}

// choose returns the packs of ids whose data the subset reads.
func (d DataSubset) choose(ids []ID) map[ID]bool {
	out := map[ID]bool{}
	if d.Groups > 0 {
		for _, id := range ids {
			if int(binary.BigEndian.Uint32(id[:4])%uint32(d.Groups)) == d.Group-1 {
				out[id] = true
			}
		}
		return out
	}
	n := int(math.Ceil(d.Percent / 100 * float64(len(ids))))
	for _, i := range rand.Perm(len(ids))[:min(n, len(ids))] {
		out[ids[i]] = true
	}
	return out
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
	// Under the lock's context: once the lock is lost a GC may run beside
	// us, and what it moves or removes is not damage. Verify then stops
	// with ErrLockLost rather than report any.
	ctx = lock.ctx
	report, err = r.verifyLocked(ctx, opts)
	// Made sure of now, not as the refresher last saw it: damage reported
	// must not be a GC's work.
	if held := lock.stillHeld(context.WithoutCancel(ctx)); held != nil {
		return VerifyReport{Damage: []Damage{}}, fmt.Errorf("verify: %w, so what it found cannot be told from what a GC did meanwhile", held)
	}
	return report, err
}

// verifyLocked is Verify under its lock.
func (r *Repository) verifyLocked(ctx context.Context, opts VerifyOptions) (VerifyReport, error) {
	var report VerifyReport

	report.Damage = []Damage{}
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
	garbage, err := loadGarbage(ctx, r.store)
	if err != nil {
		return report, fmt.Errorf("verify: %w", err)
	}
	// Verify reads through the index it loaded and never installs it as the
	// repository's: writers in this process keep adding to theirs meanwhile.
	var idx verifiedIndex
	var view *Repository
	var stored map[ID]int64
	if r.config.Version == FormatVersion2 {
		// Version 2 is read a file and a batch of packs at a time, not
		// held whole.
		x, damagedFiles, err := r.loadIndexV2Checked(ctx, true)
		if err != nil {
			return report, fmt.Errorf("verify: %w", err)
		}
		if stored, err = listPacks(ctx, r.store); err != nil {
			return report, fmt.Errorf("verify: %w", err)
		}
		v.checkIndexV2(x, damagedFiles, garbage, &report)
		idx, view = x, r.readingThrough(x)
	} else {
		state, err := loadIndexState(ctx, r.store, r.config.Version, r.Logger())
		if err != nil {
			return report, fmt.Errorf("verify: %w", err)
		}
		v.checkIndex(state, garbage, &report)
		idx, view, stored = verifiedV1{state.idx, state.idx.packEntries()}, r.readingThrough(state.idx), state.stored
	}
	if err := v.checkPacks(ctx, idx, stored, opts, &report); err != nil {
		return report, err
	}
	if x, ok := idx.(verifiedV1); ok {
		idx = verifiedV1{index: x.index} // the walk only looks up: let the entries by pack go
	}
	if x, ok := idx.(*indexV2Set); ok {
		// Chunks looked up in sorted batches, not one by one.
		if v.leaves, err = v.checkLeavesV2(ctx, view, x, points); err != nil {
			return report, fmt.Errorf("verify: %w", err)
		}
	}
	if err := v.checkRestorePoints(ctx, view, idx, points); err != nil {
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
	leaves   *leafCheck    // version 2: chunks looked up in batches (checkLeavesV2)
}

// objectRef names an object Verify checks, in the fields Damage reports.
type objectRef struct{ kind, id, pack string }

func packRef(id ID) objectRef { return objectRef{kind: "pack", id: id.String()} }

// blobRef names a blob, in pack if it is not zero.
func blobRef(t BlobType, id, pack ID) objectRef {
	ref := objectRef{kind: t.String() + "_blob", id: id.String()}
	if !pack.IsZero() {
		ref.pack = pack.String()
	}
	return ref
}

// objectRefNamed names the index file or manifest with object name name.
func objectRefNamed(name string) objectRef {
	if id, ok := strings.CutPrefix(name, manifestPrefix); ok {
		return objectRef{kind: "manifest", id: id}
	}
	return objectRef{kind: "index", id: strings.TrimPrefix(name, indexPrefix)}
}

// String is the object's name as one phrase: Damage.Object.
func (o objectRef) String() string {
	switch {
	case o.kind == "manifest":
		return manifestPrefix + o.id
	case o.kind == "index":
		return indexPrefix + o.id
	case o.kind == "pack":
		return "pack " + o.id
	case o.pack != "":
		return fmt.Sprintf("%s blob %s in pack %s", strings.TrimSuffix(o.kind, "_blob"), o.id, o.pack)
	default:
		return fmt.Sprintf("%s blob %s", strings.TrimSuffix(o.kind, "_blob"), o.id)
	}
}

// reason is what err says is wrong, without the object's name when err
// names it in its own field.
func reason(err error) string {
	if ce, ok := errors.AsType[*CorruptError](err); ok {
		return ce.Reason
	}
	return err.Error()
}

// found records ref as damaged, for reason, and returns its key in v.damage.
func (v *verifier) found(ref objectRef, reason string) string {
	object := ref.String()
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.damage[object]; !ok {
		v.damage[object] = &Damage{Kind: ref.kind, ID: ref.id, Pack: ref.pack, Object: object, Reason: reason, RestorePoints: []string{}}
	}
	return object
}

func (v *verifier) badBlob(id ID, t BlobType, ref objectRef, reason string) {
	object := v.found(ref, reason)
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
		v.found(objectRefNamed(name), reason(err))
	}
	for id, err := range state.unreadable {
		v.found(packRef(id), "no index lists it and its header is damaged: "+reason(err))
	}
}

// checkIndexV2 is checkIndex for a version 2 index: damagedFiles are the
// index files that did not open or read back sound, with the reason.
func (v *verifier) checkIndexV2(x *indexV2Set, damagedFiles map[string]error, garbage map[string]garbageRecord, report *VerifyReport) {
	report.IndexFiles = len(x.files) + len(x.damaged)
	deferred := map[ID]bool{}
	for _, g := range garbage {
		for _, id := range g.Packs {
			deferred[id] = true
		}
	}
	for id := range x.recovered {
		if !deferred[id] {
			report.UnindexedPacks++
		}
	}
	for name, err := range damagedFiles {
		v.found(objectRefNamed(name), reason(err))
	}
	for id, err := range x.unreadable {
		v.found(packRef(id), "no index lists it and its header is damaged: "+reason(err))
	}
}

// readingThrough returns a view of r that reads blobs through idx instead
// of r's own index. It is for reading only: it holds no locks.
func (r *Repository) readingThrough(idx blobIndex) *Repository {
	return &Repository{store: r.store, raw: r.raw, config: r.config, keys: r.keys, ring: r.ring, idx: idx}
}

// checkPacks reads every stored pack (or those opts picks) and checks
// every blob the index places in it.
func (v *verifier) checkPacks(ctx context.Context, idx verifiedIndex, stored map[ID]int64, opts VerifyOptions, report *VerifyReport) error {
	listed, err := idx.listedPacks(ctx)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	var present []ID
	missing := map[ID]bool{}
	for id := range listed {
		if _, ok := stored[id]; !ok {
			// Written after the packs were listed, and listed by an index
			// file a version 2 index re-listed since (see relistOnMiss)?
			info, err := v.repo.store.Stat(ctx, packName(id))
			switch {
			case err == nil:
				stored[id] = info.Size
			case errors.Is(err, ErrNotFound):
			default:
				return fmt.Errorf("verify: %w", err)
			}
		}
		if _, ok := stored[id]; ok {
			present = append(present, id)
		} else {
			missing[id] = true
		}
	}
	sort.Slice(present, func(i, j int) bool { return bytes.Compare(present[i][:], present[j][:]) < 0 })
	read := map[ID]bool{}
	switch {
	case opts.StructureOnly:
	case opts.ReadData != nil:
		read = opts.ReadData.choose(present)
	default:
		for _, id := range present {
			read[id] = true
		}
	}
	report.PacksNotRead = len(present) - len(read)
	var total int64
	for id := range read {
		total += stored[id]
	}
	err = idx.eachPack(ctx, missing, func(id ID, entries []packEntry) error {
		for _, e := range entries {
			v.badBlob(e.ID, e.Type, packRef(id), "missing: the index lists it but the store does not have it")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	var done, blobs atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	err = idx.eachPack(gctx, read, func(id ID, entries []packEntry) error {
		size := stored[id]
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
		return nil
	})
	if werr := g.Wait(); werr != nil || err != nil {
		err = cmp.Or(werr, err)
	}
	report.BytesRead, report.Blobs = done.Load(), int(blobs.Load())
	return err
}

func (v *verifier) checkPack(ctx context.Context, id ID, size int64, entries []packEntry) error {
	name := packName(id)
	data, err := v.repo.store.Get(ctx, name)
	if err != nil {
		if couldNotCheck(ctx, err) {
			return fmt.Errorf("verify: %w", err)
		}
		for _, e := range entries {
			v.badBlob(e.ID, e.Type, packRef(id), "unreadable: "+err.Error())
		}
		return nil
	}
	if Hash(data) != id {
		v.found(packRef(id), fmt.Sprintf("content does not match its name (%d bytes, listed as %d)", len(data), size))
	}
	if err := checkPackHeader(data, entries, storeKeys(v.repo.store)); err != nil {
		v.found(packRef(id), err.Error())
	}
	var buf []byte
	for _, e := range entries {
		ref := blobRef(e.Type, e.ID, id)
		end := int64(e.Offset) + int64(e.Length)
		if end > int64(len(data)) {
			v.badBlob(e.ID, e.Type, ref, "past the end of the pack")
			continue
		}
		raw, err := v.repo.decodeStored(buf, data[e.Offset:end], e)
		if err != nil {
			v.badBlob(e.ID, e.Type, ref, reason(err))
			continue
		}
		buf = raw
	}
	return nil
}

// checkPackHeader checks that the pack's own header agrees with the index.
// keys open a sealed header (an encrypted version 2 repository), else nil.
func checkPackHeader(data []byte, entries []packEntry, keys *subkeys2) error {
	header, err := decodePack(data, keys)
	if err != nil {
		return err
	}
	own := map[ID]packEntry{}
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
func (v *verifier) checkRestorePoints(ctx context.Context, view *Repository, idx verifiedIndex, points []restorePoint) error {
	memo := map[ID][]string{}
	for _, p := range points {
		point := strings.TrimPrefix(p.name, manifestPrefix)
		if p.err != nil {
			object := v.found(objectRefNamed(p.name), reason(p.err))
			v.damage[object].RestorePoints = []string{point}
			continue
		}
		m := p.manifest
		var bad []string
		if !m.Config.IsZero() {
			bad = append(bad, v.blobDamage(ctx, idx, DataBlob, m.Config)...)
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
func (v *verifier) blobDamage(ctx context.Context, idx verifiedIndex, t BlobType, id ID) []string {
	if object, ok := v.badBlobs[id]; ok {
		return []string{object}
	}
	e, _, ok, err := idx.find(ctx, id)
	if err != nil {
		v.fail(err) // not damage: Verify fails at the end instead
		return nil
	}
	if !ok || e.Type != t {
		ref := blobRef(t, id, ZeroID)
		v.badBlob(id, t, ref, "missing: no index or pack has it")
		return []string{ref.String()}
	}
	return nil
}

func (v *verifier) subtreeDamage(ctx context.Context, idx verifiedIndex, t *TreeReader, id ID, level int, n int64, memo map[ID][]string) []string {
	if id.IsZero() {
		return nil
	}
	if bad, ok := memo[id]; ok {
		return bad
	}
	bad := v.blobDamage(ctx, idx, TreeBlob, id)
	if bad == nil {
		ids, err := t.node(ctx, id, level, n, false)
		switch {
		case err != nil && couldNotCheck(ctx, err):
			v.fail(err) // not damage: Verify fails at the end instead
		case err != nil:
			_, pack, _, _ := idx.find(ctx, id) // found a moment ago
			bad = []string{v.found(blobRef(TreeBlob, id, pack), reason(err))}
		case level == 0:
			for _, b := range ids {
				if !b.IsZero() {
					bad = append(bad, v.dataDamage(ctx, idx, id, b)...)
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
