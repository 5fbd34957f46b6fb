package chain

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Writer adds blobs to the repository: one per create. It holds the
// repository's shared lock from NewWriter to Close, so GC cannot remove a
// blob the writer deduplicated against before the writer's manifest
// references it. Blobs are bundled into packs; nothing a Writer adds is in
// the index until Flush has made its packs and their index file durable.
// A Writer is safe for concurrent use.
//
// Commit order: a tree node that is stored has its whole subtree stored.
// A Writer stores a tree pack only once every pack holding a blob its nodes
// can name is stored (writeTreePack; Flush stores the data pack before the
// tree pack), and its index files list packs in the order they were stored.
// So after a crash, a tree node that the index lists, or that Open recovers
// from a pack's own header, has every node and chunk under it stored too:
// Copier relies on this to skip the subtrees a target already holds.
type Writer struct {
	repo *Repository
	lock *repoLock

	mu sync.Mutex
	// pending: the blobs claimed by this writer whose pack is not stored
	// yet (open, or being written). Once a pack is stored its blobs leave
	// pending for writtenIndex, then for the repository's index: the
	// writer's set of whole IDs holds a few packs' blobs, not a
	// checkpoint's (see remembers).
	pending map[ID]struct{}
	open    [3]*openPack  // per BlobType, so tree nodes pack together
	written []indexedPack // packs stored but not yet in an index file
	// writtenIndex finds a blob in written. The entries keep the order
	// their pack header has: index files of version 1 list them so.
	writtenIndex storedPackIndex
	// checkpointing: the packs an index file is being written for, taken
	// out of written and not yet in the index (see indexWritten).
	checkpointing      []indexedPack
	checkpointingIndex storedPackIndex
	// claimed counts the PutBlobs between claiming a blob in pending and
	// adding it to an open pack, since the last tree pack was stored: a
	// tree node may already name a blob that another PutBlob is still
	// compressing.
	claimed *sync.WaitGroup
	// storing: the full packs taken out of open and not yet stored (or
	// failed), each closing its channel when done. A pack is in it from the
	// moment it is taken, so that writeTreePack cannot miss one whose
	// PutBlob still waits for a write slot.
	storing map[*openPack]chan struct{}
	// indexing is held while an index file is written (indexWritten).
	indexing sync.Mutex
	err      error // first failure to write a pack
	closed   bool
	// Full packs are written in the background, at most maxPackWrites at a
	// time, so that the workers filling packs keep hashing and compressing
	// while the disk writes and fsyncs.
	writes    sync.WaitGroup
	writeSlot chan struct{}
	// repacking: GC copies blobs the index already has into new packs.
	repacking bool
}

// maxPackEntries closes a pack of blobs that compress very well before its
// size does: what a writer holds per pack until its index checkpoint, and
// the header a reader of the pack loads, stay bounded (16,384 entries are a
// 688 KiB header) however small the blobs. Packs of ordinary disk blocks
// fill by size long before.
var maxPackEntries = 1 << 14 // a variable so that tests can make small packs

type openPack struct {
	buf     *packBuffer
	data    []byte // in buf's memory, unless a huge blob outgrew it
	entries []packEntry
}

// NewWriter starts a writer for operation (named in the lock, for people).
// While another process collects garbage it fails with ErrLocked; see
// NewWriterWait.
func (r *Repository) NewWriter(ctx context.Context, operation string) (*Writer, error) {
	return r.NewWriterWait(ctx, operation, 0)
}

// NewWriterWait is NewWriter that waits up to wait for a GC, in this
// process or another, to finish.
func (r *Repository) NewWriterWait(ctx context.Context, operation string, wait time.Duration) (*Writer, error) {
	lock, err := r.lockWait(ctx, false, operation, wait)
	if err != nil {
		return nil, err
	}
	// Another process may have added packs, or garbage-collected some, since
	// we loaded the index; dedup must only trust blobs that exist now.
	if err := r.refreshIndex(ctx); err != nil {
		lock.unlock()
		return nil, err
	}
	return &Writer{repo: r, lock: lock, pending: map[ID]struct{}{}}, nil
}

// Context is done when the writer's lock is lost (its cause then wraps
// ErrLockLost), when the writer is closed, or when the context NewWriter was
// given ends: work for the writer should stop.
func (w *Writer) Context() context.Context {
	if w.lock == nil {
		return context.Background()
	}
	return w.lock.ctx
}

// Repository returns the repository the writer adds to.
func (w *Writer) Repository() *Repository { return w.repo }

// Has reports whether the blob is stored or being stored by this writer.
// A lookup that fails (a version 2 index is read as it is looked up)
// reports false: PutBlob then looks again, and reports the failure.
func (w *Writer) Has(id ID) bool {
	ok, err := w.has(context.Background(), id)
	return ok && err == nil
}

// has is Has that reports a failed lookup.
func (w *Writer) has(ctx context.Context, id ID) (bool, error) {
	if ok, err := w.repo.hasBlob(ctx, id); ok || err != nil {
		return ok, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.remembers(id), nil
}

// remembers reports whether this writer added id and its index file is
// not written yet: claimed (pending), in a stored pack (written), or in a
// pack an index file is being written for. w.mu is held.
func (w *Writer) remembers(id ID) bool {
	if _, ok := w.pending[id]; ok {
		return true
	}
	return w.writtenIndex.holds(w.written, &id) || w.checkpointingIndex.holds(w.checkpointing, &id)
}

// PutBlob stores data, whose ID the caller computed with Hash, unless the
// repository or this writer already has it. It returns how many bytes it
// added to a pack: 0 for a blob that was already there.
//
// data must be exactly the bytes id was hashed from, and must not change
// until PutBlob returns: it is read more than once (compressed, sealed) and
// not hashed again, and a blob stored under the ID of other bytes is handed
// on by dedup to every later block that really holds what the ID names.
// Pass a private copy, never memory another process may write (a disk
// image mapped MAP_SHARED); data is not kept after PutBlob returns.
func (w *Writer) PutBlob(ctx context.Context, t BlobType, id ID, data []byte) (int, error) {
	if id.IsZero() {
		return 0, errors.New("put blob: the zero ID is reserved for all-zero blocks")
	}
	if t != DataBlob && t != TreeBlob {
		return 0, fmt.Errorf("put blob %s: unknown type %d", id.Short(), t)
	}
	if len(data) > maxBlobSize {
		return 0, fmt.Errorf("put blob %s: %d bytes is over the %d-byte limit", id.Short(), len(data), maxBlobSize)
	}
	if !w.repacking {
		if ok, err := w.repo.hasBlob(ctx, id); err != nil {
			return 0, fmt.Errorf("put blob %s: %w", id.Short(), err)
		} else if ok {
			return 0, nil
		}
	}
	w.mu.Lock()
	if err := w.usable(); err != nil {
		w.mu.Unlock()
		return 0, err
	}
	if w.remembers(id) {
		w.mu.Unlock()
		return 0, nil
	}
	w.pending[id] = struct{}{}
	if w.claimed == nil {
		w.claimed = new(sync.WaitGroup)
	}
	claimed := w.claimed
	claimed.Add(1)
	w.mu.Unlock()

	// Compress (and seal) outside the lock: this is where the CPU goes.
	scratch := getBuffer(len(data) + len(data)/8 + 64)
	defer putBuffer(scratch)
	stored, compressed := compressBlob(scratch, data)
	if w.repo.Encrypted() {
		sealed := w.repo.sealBlob(getBuffer(len(stored) + 64)[:0], id, stored)
		defer putBuffer(sealed)
		stored = sealed
	}

	w.mu.Lock()
	claimed.Done() // a writeTreePack waiting for it takes w.mu after the append
	if err := w.usable(); err != nil {
		w.mu.Unlock()
		return 0, err
	}
	p := w.open[t]
	if p == nil {
		buf := getPackBuffer(w.repo.config.PackSize)
		p = &openPack{buf: buf, data: buf.mem[:0]}
		w.open[t] = p
	}
	p.entries = append(p.entries, packEntry{
		ID: id, Type: t, Compressed: compressed,
		Offset: uint32(len(p.data)), Length: uint32(len(stored)), RawLength: uint32(len(data)),
	})
	p.data = append(p.data, stored...)
	var full *openPack
	if len(p.data) >= w.repo.config.PackSize || len(p.entries) >= maxPackEntries {
		full, w.open[t] = p, nil
		if w.storing == nil {
			w.storing = map[*openPack]chan struct{}{}
		}
		w.storing[full] = make(chan struct{})
	}
	w.mu.Unlock()

	switch {
	case full == nil:
	case t == TreeBlob:
		w.writeTreePack(ctx, full)
	default:
		w.writeInBackground(ctx, full)
	}
	return len(stored), nil
}

// writeTreePack stores a full tree pack once every blob its nodes can name
// is stored, so that a crash never leaves a stored tree node whose subtree
// is not: it waits for the blobs claimed so far to be added to their packs,
// then for the pack writes under way, and stores the open data pack. A tree
// pack fills once per 500,000 blocks or so, so the data pack this cuts
// short costs little. A failure is recorded in w.err, as for any pack.
func (w *Writer) writeTreePack(ctx context.Context, tree *openPack) {
	w.mu.Lock()
	claimed := w.claimed
	w.claimed = new(sync.WaitGroup)
	w.mu.Unlock()
	if claimed != nil {
		claimed.Wait()
	}
	w.mu.Lock()
	data := w.open[DataBlob]
	w.open[DataBlob] = nil
	var storing []chan struct{}
	for p, done := range w.storing {
		if p != tree {
			storing = append(storing, done)
		}
	}
	w.mu.Unlock()
	for _, done := range storing {
		<-done
	}
	if data != nil {
		w.writePack(context.WithoutCancel(ctx), data) // records its error in w.err
	}
	if w.failed() != nil {
		tree.buf.release() // its nodes' children may be missing: not to be stored
		w.stored(tree)
		return
	}
	w.writeInBackground(ctx, tree)
}

const maxPackWrites = 2

// writeInBackground writes a full pack from another goroutine; the caller
// waits only when maxPackWrites writes are already under way. Flush waits
// for all of them, and a failure surfaces there (and in later PutBlobs).
func (w *Writer) writeInBackground(ctx context.Context, p *openPack) {
	w.mu.Lock()
	if w.writeSlot == nil {
		w.writeSlot = make(chan struct{}, maxPackWrites)
	}
	slots := w.writeSlot
	w.mu.Unlock()
	slots <- struct{}{}
	// The caller's context may be a scan's, cancelled as soon as the scan
	// ends: the pack must still be written. A write is short; Close waits.
	ctx = context.WithoutCancel(ctx)
	w.writes.Go(func() {
		defer func() { <-slots }()
		w.writePack(ctx, p) // records its error in w.err
		w.stored(p)
	})
}

// stored ends p's time in w.storing, stored or failed.
func (w *Writer) stored(p *openPack) {
	w.mu.Lock()
	done := w.storing[p]
	delete(w.storing, p)
	w.mu.Unlock()
	close(done)
}

func (w *Writer) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *Writer) usable() error {
	if w.closed {
		return errors.New("writer is closed")
	}
	if w.err == nil && w.lock != nil {
		return w.lock.lost()
	}
	return w.err
}

// writePack stores one pack and remembers it for the next index file;
// every indexCheckpointPacks packs it writes that index file at once. It
// releases p's buffer whether or not the pack could be stored.
func (w *Writer) writePack(ctx context.Context, p *openPack) error {
	data := appendPackHeader(p.data, p.entries, w.repo.packKeys())
	id := Hash(data)
	tree := len(p.entries) > 0 && p.entries[0].Type == TreeBlob // a pack holds one kind
	if tree {
		ctx = withTreePack(ctx) // a caching store keeps it for the next create
	}
	err := w.repo.store.Put(ctx, packName(id), data)
	if tree {
		p.buf.dropPages() // see dropPages: a tree pack fills its buffer whole
	}
	p.buf.release()
	var order []uint32
	if err == nil {
		order = entriesByID(p.entries) // outside the lock: maxPackEntries at most
	}
	w.mu.Lock()
	if err != nil {
		err = fmt.Errorf("write pack %s: %w", id.Short(), err)
		if w.err == nil {
			w.err = err
		}
		w.mu.Unlock()
		return err
	}
	w.written = append(w.written, indexedPack{ID: id, Entries: p.entries})
	w.writtenIndex.add(p.entries, order)
	for _, e := range p.entries {
		delete(w.pending, e.ID) // written has it now
	}
	checkpoint := !w.repacking && w.checkpointDue() // GC and repair write one index themselves
	w.mu.Unlock()
	if !checkpoint {
		return nil
	}
	return w.indexWritten(ctx)
}

// indexWritten writes an index file for the packs stored since the last
// one. Index files are written one at a time, each listing every pack
// stored before it began, and none after a failure: the index never lists
// a pack without the packs stored before it.
func (w *Writer) indexWritten(ctx context.Context) error {
	w.indexing.Lock()
	defer w.indexing.Unlock()
	w.mu.Lock()
	batch, err := w.written, w.err
	if err == nil {
		w.checkpointing, w.checkpointingIndex = w.written, w.writtenIndex
		w.written, w.writtenIndex = nil, storedPackIndex{}
	}
	w.mu.Unlock()
	if err != nil || len(batch) == 0 {
		return err
	}
	return w.writeIndex(ctx, batch)
}

// indexCheckpointPacks and indexCheckpointEntries: every this many packs
// (1 GiB) or blobs, whichever comes first, a writer writes an index file
// for the packs stored so far, so that what it must remember per blob does
// not grow with the disk. The blob bound matters when blocks compress
// well: 16 MiB packs of blocks that compress to a few hundred bytes hold
// tens of thousands of blobs each, and 64 of them would be millions. GC
// cannot run while the writer holds its lock, and if the create fails,
// these blobs are garbage like any other. A checkpoint lists every pack
// stored so far, so a tree pack it lists comes with the packs of the blobs
// under its nodes (see Writer's commit order). Variables so that tests can
// checkpoint after every pack.
var (
	indexCheckpointPacks   = 64
	indexCheckpointEntries = maxIndexEntries
)

// checkpointDue reports whether the packs stored since the last index file
// are enough for the next one. w.mu is held.
func (w *Writer) checkpointDue() bool {
	if len(w.written) >= indexCheckpointPacks {
		return true
	}
	entries := 0
	for _, p := range w.written {
		entries += len(p.Entries)
	}
	return entries >= indexCheckpointEntries
}

// writeIndex writes an index file for packs already stored (those of
// w.checkpointing), adds them to the repository's index, and forgets
// their blobs (the index has them).
func (w *Writer) writeIndex(ctx context.Context, packs []indexedPack) error {
	files, err := w.repo.writeIndexFiles(ctx, packs)
	if err == nil {
		err = w.repo.index().addWritten(ctx, w.repo.store, files)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.written = append(packs, w.written...)
		w.writtenIndex.prepend(w.checkpointingIndex)
		if w.err == nil {
			w.err = err
		}
	}
	w.checkpointing, w.checkpointingIndex = nil, storedPackIndex{}
	return err
}

// Flush writes the open packs and an index file for every pack written
// since the last Flush, and adds them to the repository's index. After it
// returns, every blob put so far is durable and readable. Whatever fails,
// the buffers of the packs it took are released.
func (w *Writer) Flush(ctx context.Context) error {
	w.mu.Lock()
	if err := w.usable(); err != nil {
		w.mu.Unlock()
		return err
	}
	// By BlobType, so the data pack is stored before the tree pack whose
	// nodes may name its blobs (Writer's commit order).
	var open []*openPack
	for t, p := range w.open {
		if p != nil {
			open = append(open, p)
			w.open[t] = nil
		}
	}
	w.mu.Unlock()
	w.writes.Wait()
	err := w.failed()
	for _, p := range open {
		if err != nil {
			p.buf.release() // not to be written: the writer has failed
			continue
		}
		err = w.writePack(ctx, p) // releases p's buffer, whether or not it fails
	}
	if err != nil {
		return err
	}
	return w.indexWritten(ctx)
}

// SaveManifest flushes and then commits m: the restore point becomes
// visible. It must be called before Close, so that GC cannot run between
// the blobs becoming durable and the manifest that references them.
func (w *Writer) SaveManifest(ctx context.Context, m *Manifest) error {
	if err := w.Flush(ctx); err != nil {
		return err
	}
	// A lock lost may be taken for stale elsewhere, and a GC there may
	// sweep what this writer deduplicated against: commit nothing.
	if err := w.lock.stillHeld(ctx); err != nil {
		return fmt.Errorf("save restore point %s/%s: %w", m.Collection, m.ID, err)
	}
	if err := w.repo.saveManifest(ctx, m); err != nil {
		return err
	}
	// Committed. Small index files piling up are merged now, still under
	// the writer's lock (so no GC runs meanwhile); see compactIndex.
	w.repo.compactIndexAfterCommit(ctx, w.lock.stillHeld)
	return nil
}

// Close releases the writer's lock. Blobs not flushed are dropped; packs
// written without an index file, or not referenced by any manifest, are
// garbage that GC reclaims.
func (w *Writer) Close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	w.mu.Unlock()
	w.writes.Wait() // no pack write outlives its writer
	w.mu.Lock()
	for t, p := range w.open {
		if p != nil {
			p.buf.release()
			w.open[t] = nil
		}
	}
	w.mu.Unlock()
	if w.lock != nil {
		w.lock.unlock()
	}
}
