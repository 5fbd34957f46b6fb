package cachestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/diskpoint/diskpoint/chain"
)

// DefaultMaxBytes bounds a cache when Options.MaxBytes is not set.
const DefaultMaxBytes = 2 << 30

// Options configure a [Store].
type Options struct {
	// Dir is the cache directory of this one repository, created if
	// missing (RepositoryDir names the usual one).
	Dir string
	// MaxBytes bounds the cache files' total size (default
	// DefaultMaxBytes); past it the least recently used are deleted.
	MaxBytes int64
	// Keep says which objects to keep (nil: index files, and packs read
	// or written as tree packs, see chain.IsTreePackAccess). Only objects
	// whose bytes never change under their name may be kept, unless one
	// client alone writes the store.
	Keep func(ctx context.Context, name string) bool
}

// Stats count what a Store did since it was made.
type Stats struct {
	Hits    int64 // reads served from the cache
	Misses  int64 // reads of kept objects fetched from the store
	Damaged int64 // cache files that failed their check and were fetched again
	Evicted int64 // cache files deleted to stay within MaxBytes
	Dropped int64 // cache files of objects the store no longer has
}

// Store is a [chain.Store] that keeps a verified local copy of the
// metadata of the store it wraps (see the package doc). It is safe for
// concurrent use.
type Store struct {
	inner chain.Store
	root  string // the objects, under their names
	tmp   string
	opts  Options

	mu      sync.Mutex
	entries map[string]*entry
	total   int64

	fetches                                 singleflight.Group
	hits, misses, damaged, evicted, dropped atomic.Int64
}

// entry is one cache file as this process knows it.
type entry struct {
	size int64
	used time.Time // last use; the file's mtime, as of the last touch
}

// touchEvery: a file's mtime records its use at most this often.
const touchEvery = time.Minute

var _ chain.Store = (*Store)(nil)

// New returns inner with a cache in opts.Dir around it. It reads what the
// directory already holds; files a crash left half-written are removed.
func New(inner chain.Store, opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("cache store: no directory")
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.Keep == nil {
		opts.Keep = keepMetadata
	}
	s := &Store{inner: inner, root: filepath.Join(opts.Dir, "objects"), tmp: filepath.Join(opts.Dir, "tmp"), opts: opts, entries: map[string]*entry{}}
	for _, d := range []string{s.root, s.tmp} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("cache %s: %w", opts.Dir, err)
		}
	}
	if err := s.scan(); err != nil {
		return nil, fmt.Errorf("cache %s: %w", opts.Dir, err)
	}
	return s, nil
}

// keepMetadata keeps index files and tree packs.
func keepMetadata(ctx context.Context, name string) bool {
	return strings.HasPrefix(name, "index/") || (strings.HasPrefix(name, "packs/") && chain.IsTreePackAccess(ctx))
}

// scan learns the cache files in the directory, and removes temporary
// files older than an hour (a live writer renames its own within seconds).
func (s *Store) scan() error {
	if tmps, err := os.ReadDir(s.tmp); err == nil {
		for _, t := range tmps {
			if info, err := t.Info(); err == nil && time.Since(info.ModTime()) > time.Hour {
				os.Remove(filepath.Join(s.tmp, t.Name()))
			}
		}
	}
	return filepath.WalkDir(s.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return nil // removed meanwhile
		}
		name := filepath.ToSlash(strings.TrimPrefix(path, s.root+string(filepath.Separator)))
		if chain.CheckObjectName(name) != nil {
			return nil
		}
		s.entries[name] = &entry{size: info.Size(), used: info.ModTime()}
		s.total += info.Size()
		return nil
	})
}

// Unwrap returns the wrapped store (GC looks through it for what the
// store underneath can do).
func (s *Store) Unwrap() chain.Store { return s.inner }

// Stats returns what the cache did so far.
func (s *Store) Stats() Stats {
	return Stats{Hits: s.hits.Load(), Misses: s.misses.Load(), Damaged: s.damaged.Load(), Evicted: s.evicted.Load(), Dropped: s.dropped.Load()}
}

func (s *Store) path(name string) string { return filepath.Join(s.root, filepath.FromSlash(name)) }

// Get returns the object: a kept one from the cache when it is there and
// checks out, else from the store (and then kept).
func (s *Store) Get(ctx context.Context, name string) ([]byte, error) {
	if err := chain.CheckObjectName(name); err != nil {
		return nil, err
	}
	if !s.opts.Keep(ctx, name) {
		return s.inner.Get(ctx, name)
	}
	if data, ok := s.load(name, func(e *entryFile) ([]byte, error) { return e.readAll() }); ok {
		return data, nil
	}
	data, shared, err := s.fetch(ctx, name)
	if shared {
		data = bytes.Clone(data) // each caller owns what Get returns
	}
	return data, err
}

// ReadAt fills p from the object: a kept one from the cache (fetching it
// whole first if it is not there).
func (s *Store) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if err := chain.CheckObjectName(name); err != nil {
		return err
	}
	if off < 0 || !s.opts.Keep(ctx, name) {
		return s.inner.ReadAt(ctx, name, p, off)
	}
	var short error
	if _, ok := s.load(name, func(e *entryFile) ([]byte, error) {
		err := e.readAt(p, off)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			short, err = err, nil // the object is shorter: the caller's answer
		}
		return nil, err
	}); ok {
		if short != nil {
			return fmt.Errorf("read %s: %w", name, short)
		}
		return nil
	}
	data, _, err := s.fetch(ctx, name)
	if err != nil {
		return err
	}
	if off < 0 || off+int64(len(p)) > int64(len(data)) {
		return fmt.Errorf("read %s: %d bytes at %d of %d: %w", name, len(p), off, len(data), io.ErrUnexpectedEOF)
	}
	copy(p, data[off:])
	return nil
}

// load reads a cache file with read. A file that fails its check is
// deleted: the caller then fetches the object again.
func (s *Store) load(name string, read func(*entryFile) ([]byte, error)) ([]byte, bool) {
	f, info, err := s.openFile(name)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	var data []byte
	e, err := openEntry(f, info.Size())
	if err == nil {
		data, err = read(e)
	}
	if err != nil {
		s.dropDamaged(name)
		return nil, false
	}
	s.hit(name, info)
	return data, true
}

// openFile opens name's cache file; one that is missing, or is no regular
// file, is os.ErrNotExist. The caller closes it.
func (s *Store) openFile(name string) (*os.File, os.FileInfo, error) {
	f, err := os.Open(s.path(name))
	if err != nil {
		return nil, nil, err
	}
	info, err := f.Stat()
	if err == nil && !info.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a file: %w", f.Name(), os.ErrNotExist)
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, info, nil
}

// dropDamaged counts and deletes a cache file that failed its check: the
// object is then fetched again.
func (s *Store) dropDamaged(name string) {
	s.damaged.Add(1)
	s.forget(name)
}

// hit counts a read served from name's cache file and notes its use.
func (s *Store) hit(name string, info os.FileInfo) {
	s.hits.Add(1)
	s.noteUse(name, s.path(name), info)
}

// noteUse records a hit for the LRU order, in memory and, now and then,
// in the file's mtime for the next process.
func (s *Store) noteUse(name, path string, info os.FileInfo) {
	now := time.Now()
	s.mu.Lock()
	e, ok := s.entries[name]
	if !ok { // another process wrote it after this one scanned
		e = &entry{size: info.Size()}
		s.entries[name] = e
		s.total += e.size
	}
	e.used = now
	s.mu.Unlock()
	if now.Sub(info.ModTime()) > touchEvery {
		os.Chtimes(path, now, now)
	}
}

// fetch gets the object from the store and keeps it; concurrent fetches
// of one object share one download (shared is then true).
//
// A fetch shared with callers that asked at the same moment runs under the
// ctx of the one that started it. When that ctx ends, the others' fetch
// fails with its error though their own ctx is alive: they fetch again
// rather than fail.
func (s *Store) fetch(ctx context.Context, name string) (data []byte, shared bool, err error) {
	for {
		led := false // this call ran the fetch, under its own ctx
		v, err, shared := s.fetches.Do(name, func() (any, error) {
			led = true
			s.misses.Add(1)
			data, err := s.inner.Get(ctx, name)
			if err != nil {
				return nil, err
			}
			s.keep(name, data)
			return data, nil
		})
		if err != nil && !led && ctx.Err() == nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
			continue // another caller's ctx ended, not ours
		}
		if err != nil {
			return nil, false, err
		}
		return v.([]byte), shared, nil
	}
}

// keep writes data as the cache file of name (to a temporary file,
// renamed into place) and evicts what the bound asks. Failing to keep is
// not an error: the cache is an optimisation.
func (s *Store) keep(name string, data []byte) {
	head := encodeEntry(data)
	size := int64(len(head) + len(data))
	if size > s.opts.MaxBytes {
		return
	}
	path := s.path(name)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return
	}
	f, err := os.CreateTemp(s.tmp, "entry-")
	if err != nil {
		return
	}
	_, err = f.Write(head)
	if err == nil {
		_, err = f.Write(data)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return
	}
	s.mu.Lock()
	if old, ok := s.entries[name]; ok {
		s.total -= old.size
	}
	s.entries[name] = &entry{size: size, used: time.Now()}
	s.total += size
	s.mu.Unlock()
	s.evict()
}

// evict deletes the least recently used files until the cache is within
// nine tenths of its bound, once it is past it.
func (s *Store) evict() {
	s.mu.Lock()
	if s.total <= s.opts.MaxBytes {
		s.mu.Unlock()
		return
	}
	type aged struct {
		name string
		used time.Time
	}
	all := make([]aged, 0, len(s.entries))
	for name, e := range s.entries {
		all = append(all, aged{name, e.used})
	}
	s.mu.Unlock()
	slices.SortFunc(all, func(a, b aged) int { return a.used.Compare(b.used) })
	target := s.opts.MaxBytes / 10 * 9
	for _, a := range all {
		s.mu.Lock()
		done := s.total <= target
		s.mu.Unlock()
		if done {
			return
		}
		s.forget(a.name)
		s.evicted.Add(1)
	}
}

// forget deletes the cache file of name.
func (s *Store) forget(name string) {
	os.Remove(s.path(name))
	s.mu.Lock()
	if e, ok := s.entries[name]; ok {
		s.total -= e.size
		delete(s.entries, name)
	}
	s.mu.Unlock()
}

// Put writes to the store, then keeps a kept object's new bytes (and
// drops any other copy of the name).
func (s *Store) Put(ctx context.Context, name string, data []byte) error {
	if err := s.inner.Put(ctx, name, data); err != nil {
		s.forget(name) // the store may hold either version now
		return err
	}
	s.afterWrite(ctx, name, data)
	return nil
}

// PutIfAbsent creates in the store, then keeps a kept object.
func (s *Store) PutIfAbsent(ctx context.Context, name string, data []byte) error {
	if err := s.inner.PutIfAbsent(ctx, name, data); err != nil {
		return err
	}
	s.afterWrite(ctx, name, data)
	return nil
}

func (s *Store) afterWrite(ctx context.Context, name string, data []byte) {
	if s.opts.Keep(ctx, name) {
		s.keep(name, data)
		return
	}
	s.forget(name)
}

// Stat asks the store.
func (s *Store) Stat(ctx context.Context, name string) (chain.ObjectInfo, error) {
	return s.inner.Stat(ctx, name)
}

// List lists the store. A listing that completes drops the cache files
// under prefix whose objects the store no longer has.
func (s *Store) List(ctx context.Context, prefix string, fn func(chain.ObjectInfo) error) error {
	s.mu.Lock()
	var cached map[string]bool
	for name := range s.entries {
		if strings.HasPrefix(name, prefix) {
			if cached == nil {
				cached = map[string]bool{}
			}
			cached[name] = false
		}
	}
	s.mu.Unlock()
	var seen sync.Mutex
	err := s.inner.List(ctx, prefix, func(info chain.ObjectInfo) error {
		if cached != nil {
			seen.Lock()
			if _, ok := cached[info.Name]; ok {
				cached[info.Name] = true
			}
			seen.Unlock()
		}
		return fn(info)
	})
	if err != nil {
		return err
	}
	for name, listed := range cached {
		if !listed {
			s.forget(name)
			s.dropped.Add(1)
		}
	}
	return nil
}

// Delete drops the cached copy, then deletes from the store.
func (s *Store) Delete(ctx context.Context, name string) error {
	if err := chain.CheckObjectName(name); err != nil {
		return err
	}
	s.forget(name)
	return s.inner.Delete(ctx, name)
}

// Close closes the wrapped store.
func (s *Store) Close() error { return s.inner.Close() }
