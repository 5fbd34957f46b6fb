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
type Writer struct {
	repo *Repository
	lock *repoLock

	mu      sync.Mutex
	pending map[ID]struct{} // blobs added by this writer, written or not
	open    [3]*openPack    // per BlobType, so tree nodes pack together
	written []IndexedPack   // packs stored but not yet in an index file
	err     error           // first failure to write a pack
	closed  bool
	// Full packs are written in the background, at most maxPackWrites at a
	// time, so that the workers filling packs keep hashing and compressing
	// while the disk writes and fsyncs.
	writes    sync.WaitGroup
	writeSlot chan struct{}
	// repacking: GC copies blobs the index already has into new packs.
	repacking bool
}

type openPack struct {
	buf     *packBuffer
	data    []byte // in buf's memory, unless a huge blob outgrew it
	entries []PackEntry
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
func (w *Writer) Has(id ID) bool {
	if w.repo.HasBlob(id) {
		return true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.pending[id]
	return ok
}

// PutBlob stores data, whose ID the caller computed with Hash, unless the
// repository or this writer already has it. It returns how many bytes it
// added to a pack: 0 for a blob that was already there.
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
	if !w.repacking && w.repo.HasBlob(id) {
		return 0, nil
	}
	w.mu.Lock()
	if err := w.usable(); err != nil {
		w.mu.Unlock()
		return 0, err
	}
	if _, ok := w.pending[id]; ok {
		w.mu.Unlock()
		return 0, nil
	}
	w.pending[id] = struct{}{}
	w.mu.Unlock()

	// Compress (and seal) outside the lock: this is where the CPU goes.
	scratch := getBuffer(len(data) + len(data)/8 + 64)
	defer putBuffer(scratch)
	stored, compressed := compressBlob(scratch, data)
	if w.repo.keys != nil {
		sealed := w.repo.keys.seal(getBuffer(len(stored) + 64)[:0], stored, id[:])
		defer putBuffer(sealed)
		stored = sealed
	}

	w.mu.Lock()
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
	p.entries = append(p.entries, PackEntry{
		ID: id, Type: t, Compressed: compressed,
		Offset: uint32(len(p.data)), Length: uint32(len(stored)), RawLength: uint32(len(data)),
	})
	p.data = append(p.data, stored...)
	var full *openPack
	if len(p.data) >= w.repo.config.PackSize {
		full, w.open[t] = p, nil
	}
	w.mu.Unlock()

	if full != nil {
		w.writeInBackground(ctx, full)
	}
	return len(stored), nil
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
	})
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
// every indexCheckpointPacks packs it writes that index file at once.
func (w *Writer) writePack(ctx context.Context, p *openPack) error {
	data := appendPackHeader(p.data, p.entries)
	id := Hash(data)
	err := w.repo.store.Put(ctx, packName(id), data)
	p.buf.release()
	w.mu.Lock()
	if err != nil {
		err = fmt.Errorf("write pack %s: %w", id.Short(), err)
		if w.err == nil {
			w.err = err
		}
		w.mu.Unlock()
		return err
	}
	w.written = append(w.written, IndexedPack{ID: id, Entries: p.entries})
	var batch []IndexedPack
	if !w.repacking && len(w.written) >= indexCheckpointPacks { // GC and repair write one index themselves
		batch, w.written = w.written, nil
	}
	w.mu.Unlock()
	if batch == nil {
		return nil
	}
	return w.writeIndex(ctx, batch)
}

// indexCheckpointPacks: every this many packs (1 GiB), a writer writes an
// index file for them, so that what it must remember per blob does not
// grow with the disk. GC cannot run while the writer holds its lock, and if
// the create fails, these blobs are garbage like any other.
const indexCheckpointPacks = 64

// writeIndex writes an index file for packs already stored, adds them to
// the repository's index, and forgets their blobs (the index has them).
func (w *Writer) writeIndex(ctx context.Context, packs []IndexedPack) error {
	name, err := writeIndexFile(ctx, w.repo.store, packs)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.written = append(packs, w.written...)
		if w.err == nil {
			w.err = err
		}
		return err
	}
	w.repo.index().add(name, packs)
	for _, p := range packs {
		for _, e := range p.Entries {
			delete(w.pending, e.ID)
		}
	}
	return nil
}

// Flush writes the open packs and an index file for every pack written
// since the last Flush, and adds them to the repository's index. After it
// returns, every blob put so far is durable and readable.
func (w *Writer) Flush(ctx context.Context) error {
	w.mu.Lock()
	if err := w.usable(); err != nil {
		w.mu.Unlock()
		return err
	}
	var open []*openPack
	for t, p := range w.open {
		if p != nil {
			open = append(open, p)
			w.open[t] = nil
		}
	}
	w.mu.Unlock()
	w.writes.Wait()
	if err := w.failed(); err != nil {
		return err
	}
	for _, p := range open {
		if err := w.writePack(ctx, p); err != nil {
			return err
		}
	}
	w.mu.Lock()
	written := w.written
	w.written = nil
	w.mu.Unlock()
	if len(written) == 0 {
		return nil
	}
	return w.writeIndex(ctx, written)
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
	if err := w.lock.lost(); err != nil {
		return fmt.Errorf("save restore point %s/%s: %w", m.Collection, m.ID, err)
	}
	return w.repo.saveManifest(ctx, m)
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
