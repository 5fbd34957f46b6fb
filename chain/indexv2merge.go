package chain

import (
	"bytes"
	"container/heap"
	"context"
	"fmt"
)

// indexV2MergeStats says what a merge did.
type indexV2MergeStats struct {
	Read       int // entries read from the inputs
	Dropped    int // entries keep refused
	Duplicates int // kept entries whose ID a kept entry of an earlier input had
	Written    int // entries in the new files
	Files      int // new files
}

// mergeIndexV2 merges the entries of inputs into new index files of at
// most maxEntries entries each (maxIndexEntries when 0), in ID order, and
// hands each file to put as it is finished. Only entries keep accepts are
// merged. An ID that several inputs list is written once, from the first
// input (in the order given) whose entry keep accepts: callers order the
// inputs by preference, and keep decides first, so that an entry whose
// pack is going away yields to a copy in a pack that stays. Each new
// file's write time is the newest of all the inputs'.
//
// Memory is one bucket per input (the cursors read a bucket at a time) and
// one output file's entries, whatever the inputs hold in total.
func mergeIndexV2(ctx context.Context, inputs []*indexV2Reader, keep func(indexEntry) bool, maxEntries int, put func(ctx context.Context, file []byte) error) (indexV2MergeStats, error) {
	return mergeIndexV2At(ctx, inputs, func(_, _ int, e indexEntry) bool { return keep(e) }, maxEntries, put)
}

// mergeIndexV2At is mergeIndexV2 whose keep is also told where the entry
// is: its input's number and its position in that input, so that GC can
// keep what its bitmap of positions marked.
func mergeIndexV2At(ctx context.Context, inputs []*indexV2Reader, keep func(input, pos int, e indexEntry) bool, maxEntries int, put func(ctx context.Context, file []byte) error) (indexV2MergeStats, error) {
	var stats indexV2MergeStats
	if maxEntries <= 0 {
		maxEntries = maxIndexEntries
	}
	var written int64
	heads := make(mergeHeads, 0, len(inputs))
	for i, in := range inputs {
		written = max(written, in.written)
		h := mergeHead{input: i, cursor: in.cursor(0)}
		ok, err := h.advance(ctx)
		if err != nil {
			return stats, err
		}
		if ok {
			heads = append(heads, h)
		}
	}
	heap.Init(&heads)

	w := newIndexV2Writer(maxEntries)
	flush := func() error {
		w.noteWritten(written)
		file, err := w.finish()
		if err != nil {
			return err
		}
		if err := put(ctx, file); err != nil {
			return fmt.Errorf("merge index files: %w", err)
		}
		stats.Files++
		return nil
	}
	var last ID // the last ID written
	for len(heads) > 0 {
		if stats.Read%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return stats, err
			}
		}
		e := heads[0].entry
		stats.Read++
		switch {
		case !keep(heads[0].input, heads[0].pos, e):
			stats.Dropped++
		case stats.Written > 0 && e.ID == last:
			stats.Duplicates++
		default:
			if w.full() {
				if err := flush(); err != nil {
					return stats, err
				}
			}
			if err := w.add(e); err != nil {
				return stats, err
			}
			last = e.ID
			stats.Written++
		}
		ok, err := heads[0].advance(ctx)
		if err != nil {
			return stats, err
		}
		if ok {
			heap.Fix(&heads, 0)
		} else {
			heap.Pop(&heads)
		}
	}
	if w.len() > 0 {
		if err := flush(); err != nil {
			return stats, err
		}
	}
	return stats, nil
}

// mergeHead is an input's next entry.
type mergeHead struct {
	entry  indexEntry
	pos    int // the entry's position in its input
	input  int
	cursor *indexV2Cursor
}

func (h *mergeHead) advance(ctx context.Context) (bool, error) {
	e, pos, ok, err := h.cursor.next(ctx)
	h.entry, h.pos = e, pos
	return ok, err
}

// mergeHeads is a min-heap of the inputs' next entries by ID, then by
// input, so that of equal IDs the earliest input's comes first.
type mergeHeads []mergeHead

func (h mergeHeads) Len() int { return len(h) }
func (h mergeHeads) Less(i, j int) bool {
	if c := bytes.Compare(h[i].entry.ID[:], h[j].entry.ID[:]); c != 0 {
		return c < 0
	}
	return h[i].input < h[j].input
}
func (h mergeHeads) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *mergeHeads) Push(x any)   { *h = append(*h, x.(mergeHead)) }
func (h *mergeHeads) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
