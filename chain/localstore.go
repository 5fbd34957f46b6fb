package chain

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// LocalStore is a [Store] in a local directory: one file per object, written
// to a temporary name in its directory, fsynced, renamed into place, and the
// directory fsynced, so that a crash leaves either the old object or the new
// one. Files are created 0600 and directories 0700.
type LocalStore struct {
	root string

	// Open files of recently read objects: a restore reads thousands of
	// blobs from the same few packs, and opening the pack for each costs
	// more than the read.
	fdMu sync.Mutex
	fds  map[string]*os.File
	fdq  []string // oldest first
}

const maxOpenFiles = 32

var _ Store = (*LocalStore)(nil)

// tempPrefix marks files that a Put has not finished; List skips them and
// [LocalStore.RemoveTemp] clears the ones a crash left behind. The full name
// is ".tmp-HOST-PID-RANDOM" (HOST a short hash of the host name), so that
// RemoveTemp can tell a dead writer's leftovers from a live writer's work.
const tempPrefix = ".tmp-"

// tempOrphanAge: a temp file from another host is taken for an orphan once
// this old (no Put takes that long).
const tempOrphanAge = time.Hour

var tempPattern = fmt.Sprintf("%s%s-%d-*", tempPrefix, hostTag(), os.Getpid())

func hostTag() string {
	host, _ := os.Hostname()
	h := Hash([]byte(host))
	return h.String()[:8]
}

// NewLocalStore returns a store rooted at dir, creating dir if needed.
func NewLocalStore(dir string) (*LocalStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("local store %s: %w", dir, err)
	}
	return &LocalStore{root: dir}, nil
}

// Root returns the directory the store lives in.
func (s *LocalStore) Root() string { return s.root }

func (s *LocalStore) path(name string) (string, error) {
	if err := CheckObjectName(name); err != nil {
		return "", err
	}
	return filepath.Join(s.root, filepath.FromSlash(name)), nil
}

// Put stores data under name atomically and durably.
func (s *LocalStore) Put(ctx context.Context, name string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	path, err := s.path(name)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	tmp, err := os.CreateTemp(dir, tempPattern)
	if err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("put %s: sync: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.forget(path)
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	committed = true
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// Get returns the whole object.
func (s *LocalStore) Get(ctx context.Context, name string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	path, err := s.path(name)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, notFoundOr(name, err)
	}
	return data, nil
}

// ReadAt fills p from the object at offset off.
func (s *LocalStore) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	path, err := s.path(name)
	if err != nil {
		return err
	}
	if off < 0 {
		return fmt.Errorf("read %s at %d: negative offset", name, off)
	}
	f, err := s.openCached(path)
	if err != nil {
		return notFoundOr(name, err)
	}
	if _, err := f.ReadAt(p, off); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("read %s: %d bytes at %d: past the end: %w", name, len(p), off, io.ErrUnexpectedEOF)
		}
		return fmt.Errorf("read %s: %w", name, err)
	}
	return nil
}

// Stat returns the object's size.
func (s *LocalStore) Stat(ctx context.Context, name string) (ObjectInfo, error) {
	if err := ctx.Err(); err != nil {
		return ObjectInfo{}, err
	}
	path, err := s.path(name)
	if err != nil {
		return ObjectInfo{}, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return ObjectInfo{}, notFoundOr(name, err)
	}
	if !fi.Mode().IsRegular() {
		return ObjectInfo{}, fmt.Errorf("stat %s: not an object: %w", name, ErrNotFound)
	}
	return ObjectInfo{Name: name, Size: fi.Size()}, nil
}

// List walks the objects whose names start with prefix.
func (s *LocalStore) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	// Walk from the deepest directory the prefix names, then filter by prefix.
	start := s.root
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		start = filepath.Join(s.root, filepath.FromSlash(prefix[:i]))
	}
	err := walkFiles(ctx, start, func(path string, d fs.DirEntry) error {
		if d.IsDir() || !d.Type().IsRegular() || strings.HasPrefix(d.Name(), tempPrefix) {
			return nil
		}
		rel, err := filepath.Rel(s.root, path)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		if !strings.HasPrefix(name, prefix) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // deleted while listing
			}
			return err
		}
		return fn(ObjectInfo{Name: name, Size: info.Size()})
	})
	if err != nil {
		return fmt.Errorf("list %q in %s: %w", prefix, s.root, err)
	}
	return nil
}

// Delete removes the object and fsyncs its directory.
func (s *LocalStore) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	path, err := s.path(name)
	if err != nil {
		return err
	}
	s.forget(path)
	if err := os.Remove(path); err != nil {
		return notFoundOr(name, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// openCached returns an open file for path, from the cache if it is there.
// Objects are never changed in place (Put renames a new file over the old,
// and packs are named by content), so a cached descriptor reads what the
// name held when it was opened; Put and Delete drop it.
func (s *LocalStore) openCached(path string) (*os.File, error) {
	s.fdMu.Lock()
	defer s.fdMu.Unlock()
	if f, ok := s.fds[path]; ok {
		return f, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if s.fds == nil {
		s.fds = map[string]*os.File{}
	}
	if len(s.fdq) >= maxOpenFiles {
		oldest := s.fdq[0]
		s.fdq = s.fdq[1:]
		// Readers may still hold it: let the finalizer close it.
		delete(s.fds, oldest)
	}
	s.fds[path] = f
	s.fdq = append(s.fdq, path)
	return f, nil
}

// forget drops path from the descriptor cache.
func (s *LocalStore) forget(path string) {
	s.fdMu.Lock()
	defer s.fdMu.Unlock()
	if _, ok := s.fds[path]; !ok {
		return
	}
	delete(s.fds, path)
	for i, p := range s.fdq {
		if p == path {
			s.fdq = append(s.fdq[:i], s.fdq[i+1:]...)
			break
		}
	}
}

// RemoveTemp deletes temporary files that interrupted Puts left behind and
// returns how many it removed: those of writers on this host that no longer
// run, and those from other hosts older than an hour. A live writer's file
// is left alone.
func (s *LocalStore) RemoveTemp(ctx context.Context) (int, error) {
	removed := 0
	err := walkFiles(ctx, s.root, func(path string, d fs.DirEntry) error {
		if !d.IsDir() && strings.HasPrefix(d.Name(), tempPrefix) && tempOrphaned(d) {
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			removed++
		}
		return nil
	})
	if err != nil {
		return removed, fmt.Errorf("remove temporary files in %s: %w", s.root, err)
	}
	return removed, nil
}

func notFoundOr(name string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("object %s: %w", name, ErrNotFound)
	}
	return fmt.Errorf("object %s: %w", name, err)
}

// tempOrphaned reports whether a temp file's writer is gone.
func tempOrphaned(d fs.DirEntry) bool {
	parts := strings.SplitN(strings.TrimPrefix(d.Name(), tempPrefix), "-", 3)
	if len(parts) == 3 && parts[0] == hostTag() {
		pid, err := strconv.Atoi(parts[1])
		if err == nil && pid > 0 {
			return pid != os.Getpid() && syscall.Kill(pid, 0) == syscall.ESRCH
		}
	}
	info, err := d.Info()
	return err == nil && time.Since(info.ModTime()) > tempOrphanAge
}

// walkFiles walks the tree under dir, stopping when ctx is done; entries
// removed while it walks are skipped.
func walkFiles(ctx context.Context, dir string, fn func(path string, d fs.DirEntry) error) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		return fn(path, d)
	})
}
