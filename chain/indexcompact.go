package chain

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Compaction of version 2 index files. Every create that stores anything
// writes an index file of its own, so between GCs the files pile up, one
// per restore point, and each load of the index opens every file and each
// miss asks every file's filter. A writer that has committed merges the
// small files into few (see FORMAT.md, "Compaction of index files").

// indexCompactSmallBytes: an index file smaller than this is small. It
// is the bytes of the entries alone of a file a quarter full, so a small
// file has fewer than maxIndexEntries/4 entries, and the rule is decided
// from a listing's sizes without reading anything.
const indexCompactSmallBytes = maxIndexEntries / 4 * indexV2EntrySize

// indexCompactAt: a compaction runs when more than this many small files
// of one tier are listed, and merges that tier's files. It is also the
// ratio of one tier's sizes to the next's (see indexCompactTier). A
// variable so that tests can compact often.
var indexCompactAt = 16

// indexCompactTier is the tier of a small index file of size bytes: t for
// sizes from F^t to F^(t+1)-1, F being indexCompactAt. Only files of one
// tier are merged, more than F of them at a time, so what a merge writes
// is at least F+1 times the smallest input: an entry climbs a tier, or
// leaves the small files, each time it is rewritten. Merging every small
// file together, as compaction did first, rewrote the merged file of all
// earlier creates at every compaction: bytes rewritten grew with the
// square of the creates (21 s instead of 8 s for a create after 3,000
// points), where tiers bound them by the creates' own bytes times the
// number of tiers (log_F of small over the smallest file: 4 at F = 16).
func indexCompactTier(size int64) int {
	f := int64(max(2, indexCompactAt))
	t := 0
	for ; size >= f; size /= f {
		t++
	}
	return t
}

// indexCompactPick returns the small files of the lowest tier that has
// more than indexCompactAt of them, or nil: what the next merge takes.
func indexCompactPick(files []ObjectInfo) []ObjectInfo {
	tiers := map[int][]ObjectInfo{}
	for _, f := range files {
		if f.Size < indexCompactSmallBytes {
			t := indexCompactTier(f.Size)
			tiers[t] = append(tiers[t], f)
		}
	}
	lowest := -1
	for t, fs := range tiers {
		if len(fs) > indexCompactAt && (lowest < 0 || t < lowest) {
			lowest = t
		}
	}
	if lowest < 0 {
		return nil
	}
	return tiers[lowest]
}

// indexCompactMaxInputs bounds the files one compaction merges (its
// memory is a bucket and the tables of each): a backlog larger than this
// is merged in several rounds.
var indexCompactMaxInputs = 1024

// indexCompaction says what a compaction did.
type indexCompaction struct {
	Inputs  int // small files merged
	Outputs int // files written
	Deleted int // inputs deleted
	Entries int // entries written
	// Read and Written: bytes of the inputs merged and of the files
	// written, so that what compaction rewrites can be seen and bounded.
	Read, Written int64
}

// shouldCompactIndex reports whether the files x has opened include more
// than indexCompactAt small ones of one tier: the check a writer makes
// after its commit, without I/O. The listing decides in the end
// (compactIndex).
func (x *indexV2Set) shouldCompactIndex() bool {
	x.mu.RLock()
	infos := make([]ObjectInfo, len(x.files))
	for i, f := range x.files {
		infos[i] = ObjectInfo{Name: f.name, Size: f.layout.size}
	}
	x.mu.RUnlock()
	return indexCompactPick(infos) != nil
}

// compactIndexAfterCommit is what a writer of a version 2 repository does
// once its restore point is committed: when small index files have piled
// up, it merges them. The restore point is safe whatever happens here, so
// a failure is logged, not returned: the next writer, or GC, compacts.
func (r *Repository) compactIndexAfterCommit(ctx context.Context, held func(context.Context) error) {
	x, ok := r.index().(*indexV2Set)
	if !ok || !x.shouldCompactIndex() {
		return
	}
	// One at a time in a process: writers committing together would merge
	// the same files (harmless, since the names are the bytes', but
	// wasted).
	if !x.compacting.TryLock() {
		return
	}
	defer x.compacting.Unlock()
	done, err := r.compactIndex(ctx, held)
	if err != nil {
		r.Logger().Warn("compaction of index files failed; a later writer or GC compacts them", "error", err)
		return
	}
	r.Logger().Debug("index files compacted", "inputs", done.Inputs, "outputs", done.Outputs, "entries", done.Entries, "read", done.Read, "written", done.Written)
}

// compactIndex merges the small index files of a version 2 repository,
// a tier at a time while a tier has more than indexCompactAt of them
// (indexCompactTier), into files of up to maxIndexEntries entries, and
// then deletes them. The caller holds a lock
// (a writer's shared lock), so no GC runs meanwhile; other writers,
// readers and compactions may. held makes sure of the lock before each
// merged file is written: a file written after a GC elsewhere swept
// (the lock lost, taken for stale) could list packs that GC deleted.
//
// It never loses an entry: the merged files keep every entry of every
// input (duplicates once, the first input's, inputs in name order) and
// are durable before any input is deleted; a reader that opened an input
// and finds it gone re-lists (indexV2Set.lookupFiles) and finds the
// merged file. Two compactions of the same inputs write the same bytes
// under the same name (content-addressed names, inputs in name order,
// the write time the newest of the inputs'); of different but
// overlapping inputs, both merged files are written before either
// deletes, so every entry stays listed somewhere. A compaction whose
// input another deleted first stops at the failed read, having deleted
// nothing: what it wrote lists only entries that stay true.
func (r *Repository) compactIndex(ctx context.Context, held func(context.Context) error) (indexCompaction, error) {
	var total indexCompaction
	for {
		done, more, err := r.compactIndexOnce(ctx, held)
		total.Inputs += done.Inputs
		total.Outputs += done.Outputs
		total.Deleted += done.Deleted
		total.Entries += done.Entries
		total.Read += done.Read
		total.Written += done.Written
		if err != nil || !more {
			if x, ok := r.index().(*indexV2Set); ok && err == nil && total.Deleted > 0 {
				err = x.relistNow(ctx) // drop the readers of the deleted inputs
			}
			return total, err
		}
	}
}

// compactIndexOnce is one round of compactIndex: it merges up to
// indexCompactMaxInputs small files of the lowest tier that has too many
// (indexCompactPick), and says whether to list again for another round:
// after a merge, whose output may fill the tier above. Each round leaves
// fewer files than it found (more than indexCompactAt small inputs make
// fewer full outputs), so the rounds end.
func (r *Repository) compactIndexOnce(ctx context.Context, held func(context.Context) error) (done indexCompaction, more bool, err error) {
	infos, err := listObjects(ctx, r.store, indexPrefix)
	if err != nil {
		return done, false, fmt.Errorf("compact index: list: %w", err)
	}
	small := indexCompactPick(infos)
	if small == nil {
		return done, false, nil
	}
	// In name order, so that compactions of the same files write the same
	// bytes (mergeIndexV2 keeps the first input's entry of a duplicate).
	slices.SortFunc(small, func(a, b ObjectInfo) int { return strings.Compare(a.Name, b.Name) })
	small = small[:min(len(small), indexCompactMaxInputs)]
	inputs := make([]*indexV2Reader, 0, len(small))
	for _, info := range small {
		f, err := openIndexV2Object(ctx, r.store, info.Name, info.Size)
		switch {
		case errors.As(err, new(*CorruptError)):
			// Left as it is, for verify to report and GC to rewrite; its
			// packs are read from their own headers meanwhile.
			r.Logger().Warn("damaged index file left out of a compaction", "object", info.Name, "error", err)
			continue
		case err != nil:
			// ErrNotFound: another compaction merged it already.
			return done, false, fmt.Errorf("compact index: open %s: %w", info.Name, err)
		}
		inputs = append(inputs, f)
	}
	if len(inputs) < 2 {
		return done, false, nil
	}
	written := map[string]bool{}
	merge := func() (indexV2MergeStats, error) {
		return mergeIndexV2(ctx, inputs, func(indexEntry) bool { return true }, maxIndexEntries, func(ctx context.Context, file []byte) error {
			name := indexPrefix + Hash(file).String()
			if err := held(ctx); err != nil {
				return err
			}
			if err := r.store.Put(ctx, name, file); err != nil {
				return fmt.Errorf("write %s: %w", name, err)
			}
			written[name] = true
			done.Outputs++
			done.Written += int64(len(file))
			return nil
		})
	}
	stats, err := merge()
	for err != nil && len(inputs) > 2 {
		// An input damaged past its tables (a bucket) is left out, for
		// verify to report and GC to rewrite; what was written of the
		// merge so far lists only sound entries, and is merged again.
		bad := damagedIndexFile(err)
		if bad == "" {
			break
		}
		r.Logger().Warn("damaged index file left out of a compaction", "object", bad, "error", err)
		inputs = slices.DeleteFunc(inputs, func(f *indexV2Reader) bool { return f.name == bad })
		stats, err = merge()
	}
	done.Inputs = len(inputs)
	done.Entries = stats.Written
	for _, f := range inputs {
		done.Read += f.layout.size
	}
	if err != nil {
		return done, false, fmt.Errorf("compact index: %w (no index file was deleted)", err)
	}
	// Every merged file is durable (Store.Put): now the inputs can go.
	for _, f := range inputs {
		if written[f.name] {
			continue // the merge reproduced it byte for byte
		}
		if err := r.store.Delete(ctx, f.name); err != nil && !errors.Is(err, ErrNotFound) {
			return done, false, fmt.Errorf("compact index: delete %s: %w", f.name, err)
		}
		done.Deleted++
	}
	return done, done.Deleted > 0, nil
}
