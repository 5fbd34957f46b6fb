package chain

import (
	"context"
	"errors"
	"fmt"
	"sort"
)

// verifiedIndex is the index as Verify reads it: lookups, the packs it
// lists blobs in, and each pack's entries (those of the blobs it serves
// from that pack).
type verifiedIndex interface {
	find(ctx context.Context, id ID) (packEntry, ID, bool, error)
	// listedPacks returns the packs the index lists blobs in.
	listedPacks(ctx context.Context) (map[ID]bool, error)
	// eachPack calls fn with the entries of each pack in want, one at a
	// time.
	eachPack(ctx context.Context, want map[ID]bool, fn func(pack ID, entries []packEntry) error) error
}

// verifiedV1 is a version 1 index, held whole, as Verify reads it.
type verifiedV1 struct {
	*index
	byPack map[ID][]packEntry
}

func (x verifiedV1) listedPacks(context.Context) (map[ID]bool, error) {
	packs := make(map[ID]bool, len(x.byPack))
	for id := range x.byPack {
		packs[id] = true
	}
	return packs, nil
}

func (x verifiedV1) eachPack(_ context.Context, want map[ID]bool, fn func(ID, []packEntry) error) error {
	for id := range want {
		if err := fn(id, x.byPack[id]); err != nil {
			return err
		}
	}
	return nil
}

// verifyBatchEntries bounds the entries a version 2 verify collects at
// once: each batch of packs costs one pass over the index files.
var verifyBatchEntries = 1 << 20

func (x *indexV2Set) listedPacks(ctx context.Context) (map[ID]bool, error) {
	counts, err := x.packCounts(ctx)
	if err != nil {
		return nil, err
	}
	packs := make(map[ID]bool, len(counts))
	for id := range counts {
		packs[id] = true
	}
	return packs, nil
}

// packCounts returns how many entries the index lists in each pack. Verify
// asks more than once: the first answer is kept (Verify's own set; a file
// re-listed later changes which file lists an entry, not the counts it
// sizes its batches by).
func (x *indexV2Set) packCounts(ctx context.Context) (map[ID]int, error) {
	x.mu.RLock()
	counts := x.counts
	x.mu.RUnlock()
	if counts != nil {
		return counts, nil
	}
	err := x.withFiles(ctx, func(files []*indexV2Reader) error {
		counts = map[ID]int{}
		for _, f := range files {
			err := f.iterate(ctx, func(_ int, e indexEntry) error {
				counts[e.Pack]++
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for pack, entries := range x.recoveredEntries {
		counts[pack] += len(entries)
	}
	x.mu.Lock()
	x.counts = counts
	x.mu.Unlock()
	return counts, nil
}

// withFiles calls fn with the set's files; when fn finds one gone (a
// compaction elsewhere replaced it by files that list its entries), the
// set re-lists and fn runs again over the new files. fn must start
// afresh each time.
func (x *indexV2Set) withFiles(ctx context.Context, fn func(files []*indexV2Reader) error) error {
	for attempt := 1; ; attempt++ {
		x.mu.RLock()
		files, relists, store := x.files, x.relists, x.store
		x.mu.RUnlock()
		err := fn(files)
		if err == nil || store == nil || !errors.Is(err, ErrNotFound) || attempt == maxIndexLoads {
			return err
		}
		if rerr := x.relist(ctx, relists); rerr != nil {
			return fmt.Errorf("%w, and listing the index again failed: %w", err, rerr)
		}
	}
}

// eachPack collects the entries of the packs in want a batch at a time
// (at most verifyBatchEntries, or one pack), with a pass over the index
// files per batch, so that its memory does not grow with the index. Of a
// blob listed more than once, only the entry that serves it is given.
func (x *indexV2Set) eachPack(ctx context.Context, want map[ID]bool, fn func(ID, []packEntry) error) error {
	counts, err := x.packCounts(ctx)
	if err != nil {
		return err
	}
	var order []ID
	for id := range want {
		order = append(order, id)
	}
	sort.Slice(order, func(i, j int) bool { return string(order[i][:]) < string(order[j][:]) })
	for len(order) > 0 {
		batch := map[ID]bool{}
		n := 0
		for len(order) > 0 && (len(batch) == 0 || n+counts[order[0]] <= verifyBatchEntries) {
			batch[order[0]] = true
			n += counts[order[0]]
			order = order[1:]
		}
		var byPack map[ID][]packEntry
		err := x.withFiles(ctx, func(files []*indexV2Reader) error {
			byPack = map[ID][]packEntry{}
			for i, f := range files {
				err := f.iterate(ctx, func(_ int, e indexEntry) error {
					if !batch[e.Pack] {
						return nil
					}
					served, err := servedFromFile(ctx, files[:i], e.ID)
					if served {
						byPack[e.Pack] = append(byPack[e.Pack], e.packEntry)
					}
					return err
				})
				if err != nil {
					return err
				}
			}
			for pack, entries := range x.recoveredEntries {
				if !batch[pack] {
					continue
				}
				for _, e := range entries {
					served, err := servedFromFile(ctx, files, e.ID)
					if err != nil {
						return err
					}
					if o, ok := x.overlay[e.ID]; served && ok && o.Pack == pack && o.Offset == e.Offset {
						byPack[pack] = append(byPack[pack], e)
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for id := range batch {
			if err := fn(id, byPack[id]); err != nil {
				return err
			}
		}
	}
	return nil
}

// servedFromFile reports whether no file of before lists id: the entry
// of the file after them (or of the overlay) serves it. The filters
// answer nearly all of these without a read.
func servedFromFile(ctx context.Context, before []*indexV2Reader, id ID) (bool, error) {
	for _, f := range before {
		if _, _, ok, err := f.lookup(ctx, id); err != nil || ok {
			return false, err
		}
	}
	return true, nil
}

// leafCheck is what verify's batched pass over a version 2 index found of
// the chunks of leaf nodes: the leaves whose chunks it looked up, and the
// chunks among them that no index file or recovered pack lists as a data
// blob. The walk of the block maps then asks the index only about those
// (to report them), instead of looking up every chunk on its own.
type leafCheck struct {
	checked map[ID]bool // leaf node IDs
	suspect map[ID]bool // chunk IDs
}

// verifyLeafBatch is how many chunk IDs the batched pass looks up at once
// (see indexV2MarkBatch).
var verifyLeafBatch = 1 << 18

// checkLeavesV2 walks the block maps of points, reading each node once,
// and looks up the chunks their leaves name in sorted batches, a file at
// a time (lookupBatchIn): a bucket is read about once per batch, where a
// lookup per chunk reads one per chunk. A node it cannot read, or a batch
// whose lookups fail, is left to the walk that follows, which reports
// what is wrong; only the leaves it checked whole are in checked.
func (v *verifier) checkLeavesV2(ctx context.Context, view *Repository, x *indexV2Set, points []restorePoint) (*leafCheck, error) {
	lc := &leafCheck{checked: map[ID]bool{}, suspect: map[ID]bool{}}
	var leaves []ID
	var chunks []ID
	resolve := func() error {
		defer func() { leaves, chunks = leaves[:0], chunks[:0] }()
		ids := sortIDs(chunks)
		x.mu.RLock()
		files := x.files
		x.mu.RUnlock()
		left, err := lookupBatchIn(ctx, files, ids, func(id ID, _, _ int, e indexEntry) error {
			if e.Type != DataBlob {
				lc.suspect[id] = true
			}
			return nil
		})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return nil // these leaves are checked blob by blob
		}
		for _, id := range left {
			x.mu.RLock()
			o, ok := x.overlay[id]
			x.mu.RUnlock()
			if !ok || o.Type != DataBlob {
				lc.suspect[id] = true
			}
		}
		for _, leaf := range leaves {
			lc.checked[leaf] = true
		}
		return nil
	}
	seen := map[ID]bool{}
	for _, p := range points {
		if p.err != nil {
			continue
		}
		for _, d := range p.manifest.Disks {
			err := view.OpenTree(d).WalkNodes(ctx, seen, func(id ID, level int, ids []ID) error {
				if level != 0 {
					return nil
				}
				leaves = append(leaves, id)
				for _, b := range ids {
					if !b.IsZero() {
						chunks = append(chunks, b)
					}
				}
				if len(chunks) >= verifyLeafBatch {
					return resolve()
				}
				return nil
			})
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			_ = err // an unreadable node: the walk that follows reports it
		}
	}
	if err := resolve(); err != nil {
		return nil, err
	}
	return lc, nil
}

// dataDamage is blobDamage for chunk id of leaf node leaf: a leaf the
// batched pass checked asks the index again only about its suspect
// chunks. A chunk the pack checks found damaged is reported as ever.
func (v *verifier) dataDamage(ctx context.Context, idx verifiedIndex, leaf, id ID) []string {
	if _, bad := v.badBlobs[id]; !bad && v.leaves != nil && v.leaves.checked[leaf] && !v.leaves.suspect[id] {
		return nil
	}
	return v.blobDamage(ctx, idx, DataBlob, id)
}
