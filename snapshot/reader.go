package snapshot

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/diskpoint/diskpoint/chain"
)

// DiskReader reads a disk restore point at any offset: the base of instant
// access (the NBD export), file-level restore, and anything that wants a
// disk without restoring it. It checks every chunk's hash, keeps a bounded
// cache of recent blocks and block-map leaves, and is safe for concurrent use.
//
// It holds a reader lock until Close: GCs in any process keep what it reads,
// even if its restore point is deleted meanwhile. Close it when done.
type DiskReader struct {
	repo *chain.Repository
	tree *chain.TreeReader
	g    chain.Geometry
	lock *chain.ReaderLock
	// ownsLock: Close releases lock. A mount's readers share the mount's.
	ownsLock bool
	closed   atomic.Bool

	mu     sync.Mutex
	blocks *lru[chain.ID, []byte]
	leaves *lru[int64, []chain.ID]
	// loading holds the blocks being read now, so that a read and a
	// read-ahead of the same block read it once.
	loading map[chain.ID]*blockLoad
}

// blockLoad is one block being read; done is closed when data and err are set.
type blockLoad struct {
	done chan struct{}
	data []byte
	err  error
}

var _ io.ReaderAt = (*DiskReader)(nil)

// ReaderOptions configure OpenDisk.
type ReaderOptions struct {
	// CacheBytes bounds the cache of decompressed blocks; 0 means 64 MiB.
	CacheBytes int64
}

// OpenDisk opens disk of restore point id (an ID, a unique prefix, or
// Latest: the newest point that has the disk) for reading. The reader
// holds a reader lock until Close.
func (c *Collection) OpenDisk(ctx context.Context, id, disk string, opts ReaderOptions) (*DiskReader, error) {
	points, lock, err := c.lockPointsWithDisk(ctx, "read disk "+disk, disk, id)
	if err != nil {
		return nil, err
	}
	d, err := diskIn(c, points[0], disk)
	if err != nil {
		lock.Close()
		return nil, err
	}
	r := newDiskReader(c, d, lock, opts)
	r.ownsLock = true
	return r, nil
}

// newDiskReader returns a reader of disk d that reads under lock, which
// the caller took with d's root among its roots.
func newDiskReader(c *Collection, d *pointDisk, lock *chain.ReaderLock, opts ReaderOptions) *DiskReader {
	cacheBytes := opts.CacheBytes
	if cacheBytes <= 0 {
		cacheBytes = 64 << 20
	}
	tree := c.repo.chain.OpenTree(d.disk)
	return &DiskReader{
		repo:    c.repo.chain,
		tree:    tree,
		g:       tree.Geometry(),
		lock:    lock,
		blocks:  newLRU[chain.ID, []byte](int(max(cacheBytes/int64(d.disk.BlockSize), 1))),
		leaves:  newLRU[int64, []chain.ID](256),
		loading: map[chain.ID]*blockLoad{},
	}
}

// lockPoints opens restore points ids (each an ID, a prefix or Latest) for reading
// by the open protocol of chain/FORMAT.md's safety model: read each
// manifest, take one reader lock on everything they reference, read each
// manifest again. A point deleted in between is ErrNotFound: a GC may have
// swept it before the lock was visible. The caller closes the lock.
func (c *Collection) lockPoints(ctx context.Context, operation string, ids ...string) ([]*RestorePoint, *chain.ReaderLock, error) {
	return c.lockPointsWithDisk(ctx, operation, "", ids...)
}

// lockPointsWithDisk is lockPoints where Latest is the newest point that
// has disk (see GetWithDisk).
func (c *Collection) lockPointsWithDisk(ctx context.Context, operation, disk string, ids ...string) ([]*RestorePoint, *chain.ReaderLock, error) {
	points := make([]*RestorePoint, len(ids))
	var roots []chain.ID
	for i, id := range ids {
		rp, err := c.GetWithDisk(ctx, id, disk)
		if err != nil {
			return nil, nil, err
		}
		points[i] = rp
		roots = append(roots, rp.roots()...)
	}
	lock, err := c.repo.chain.OpenReader(ctx, operation+" in "+c.name, roots)
	if err != nil {
		return nil, nil, err
	}
	for _, rp := range points {
		if _, err := c.repo.chain.LoadManifest(ctx, c.name, rp.ID); err != nil {
			lock.Close()
			if errors.Is(err, ErrNotFound) {
				return nil, nil, fmt.Errorf("restore point %s/%s was deleted while being opened: %w", c.name, rp.ID, err)
			}
			return nil, nil, err
		}
	}
	return points, lock, nil
}

// diskIn finds disk in restore point rp.
func diskIn(c *Collection, rp *RestorePoint, disk string) (*pointDisk, error) {
	d, ok := rp.Disk(disk)
	if !ok {
		return nil, fmt.Errorf("restore point %s/%s has no disk %q: %w", c.name, rp.ID, disk, ErrNotFound)
	}
	return &pointDisk{point: rp.ID, disk: d.manifest()}, nil
}

// Size is the disk's size in bytes.
func (r *DiskReader) Size() int64 { return r.g.Size }

// Close releases the reader's lock; reads after Close fail.
func (r *DiskReader) Close() error {
	r.closed.Store(true)
	if !r.ownsLock {
		return nil
	}
	return r.lock.Close()
}

// ReadAt reads len(p) bytes at off, as io.ReaderAt says: fewer only at the
// end of the disk, with io.EOF. A damaged chunk gives an error wrapping
// ErrCorrupt that names it.
func (r *DiskReader) ReadAt(p []byte, off int64) (int, error) {
	return r.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext is ReadAt with a context.
func (r *DiskReader) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if r.closed.Load() {
		return 0, errors.New("read from a closed DiskReader")
	}
	if err := r.lock.Err(); err != nil {
		// GCs may no longer keep what this reader reads.
		return 0, fmt.Errorf("read at %d: %w", off, err)
	}
	if off < 0 {
		return 0, fmt.Errorf("read at %d: negative offset", off)
	}
	if off >= r.g.Size {
		return 0, io.EOF
	}
	want := len(p)
	p = p[:min(int64(len(p)), r.g.Size-off)]
	bs := int64(r.g.BlockSize)
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		block := pos / bs
		data, err := r.block(ctx, block)
		if err != nil {
			return n, err
		}
		within := int(pos - block*bs)
		if data == nil { // a zero block
			end := min(len(p), n+r.g.BlockLength(block)-within)
			clear(p[n:end])
			n = end
			continue
		}
		n += copy(p[n:], data[within:])
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

// block returns block i's bytes, or nil for a zero block.
func (r *DiskReader) block(ctx context.Context, i int64) ([]byte, error) {
	ids, err := r.leafBlocks(ctx, i/int64(r.g.Fanout))
	if err != nil {
		return nil, err
	}
	id := ids[i%int64(r.g.Fanout)]
	if id.IsZero() {
		return nil, nil
	}
	for {
		r.mu.Lock()
		if data, ok := r.blocks.get(id); ok {
			r.mu.Unlock()
			return data, nil
		}
		load, ok := r.loading[id]
		if !ok {
			break // with r.mu held: this call reads the block
		}
		r.mu.Unlock()
		select { // another read is reading it
		case <-load.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if load.err == nil || !errors.Is(load.err, context.Canceled) && !errors.Is(load.err, context.DeadlineExceeded) {
			return load.data, load.err
		}
		// That read was given up by its caller, not failed: read it here.
	}
	load := &blockLoad{done: make(chan struct{})}
	r.loading[id] = load
	r.mu.Unlock()

	load.data, load.err = r.readBlock(ctx, i, id)
	r.mu.Lock()
	delete(r.loading, id)
	if load.err == nil {
		r.blocks.put(id, load.data)
	}
	r.mu.Unlock()
	close(load.done)
	return load.data, load.err
}

// leafBlocks returns the block IDs leaf j lists, through the cache.
func (r *DiskReader) leafBlocks(ctx context.Context, j int64) ([]chain.ID, error) {
	r.mu.Lock()
	ids, ok := r.leaves.get(j)
	r.mu.Unlock()
	if ok {
		return ids, nil
	}
	ids, err := r.tree.Leaf(ctx, j, nil)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.leaves.put(j, ids)
	r.mu.Unlock()
	return ids, nil
}

// readBlock reads block i, whose chunk is id, from the repository.
func (r *DiskReader) readBlock(ctx context.Context, i int64, id chain.ID) ([]byte, error) {
	data, err := r.repo.ReadBlob(ctx, chain.DataBlob, id, nil)
	if err != nil {
		return nil, fmt.Errorf("block %d: %w", i, err)
	}
	if len(data) != r.g.BlockLength(i) {
		return nil, &chain.CorruptError{Object: "data blob " + id.String(), Reason: fmt.Sprintf("%d bytes where block %d has %d", len(data), i, r.g.BlockLength(i))}
	}
	return data, nil
}

// lru is a least-recently-used cache of at most max entries. Not safe for
// concurrent use; DiskReader guards it.
type lru[K comparable, V any] struct {
	max   int
	order *list.List // front: most recent; values are *lruEntry
	items map[K]*list.Element
}

type lruEntry[K comparable, V any] struct {
	key K
	val V
}

func newLRU[K comparable, V any](max int) *lru[K, V] {
	return &lru[K, V]{max: max, order: list.New(), items: map[K]*list.Element{}}
}

func (c *lru[K, V]) get(k K) (V, bool) {
	if e, ok := c.items[k]; ok {
		c.order.MoveToFront(e)
		return e.Value.(*lruEntry[K, V]).val, true
	}
	var zero V
	return zero, false
}

func (c *lru[K, V]) put(k K, v V) {
	if e, ok := c.items[k]; ok {
		e.Value.(*lruEntry[K, V]).val = v
		c.order.MoveToFront(e)
		return
	}
	c.items[k] = c.order.PushFront(&lruEntry[K, V]{k, v})
	if c.order.Len() > c.max {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.items, oldest.Value.(*lruEntry[K, V]).key)
	}
}
