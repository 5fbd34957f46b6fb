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

	"golang.org/x/sys/unix"
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

var (
	_ Store              = (*LocalStore)(nil)
	_ LinearizableLister = (*LocalStore)(nil)
)

// tempPrefix marks files that a Put has not finished; List skips them and
// [LocalStore.RemoveTemp] clears the ones a crash left behind. The full name
// is ".tmp-HOST-PID-RANDOM" (HOST a short hash of the host name), so that
// RemoveTemp can tell a dead writer's leftovers from a live writer's work.
const tempPrefix = ".tmp-"

// tempOrphanAge: a temp file from another host is taken for an orphan once
// this old (no Put takes that long).
const tempOrphanAge = time.Hour

var tempPattern = fmt.Sprintf("%s%s-%d-*", tempPrefix, hostTag(), os.Getpid())

// hostTag names this host and process space (see processSpace): only a
// temp file whose tag is ours has a PID worth checking.
func hostTag() string {
	host, _ := os.Hostname()
	h := Hash([]byte(host + "\x00" + processSpace()))
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
	return s.put(ctx, name, data, false)
}

// PutIfAbsent stores data under name atomically and durably if no object
// of that name exists. The new file is linked into place with
// renameat2(RENAME_NOREPLACE), or link(2) where the file system lacks it:
// both fail when the name exists, in this process or any other.
func (s *LocalStore) PutIfAbsent(ctx context.Context, name string, data []byte) error {
	return s.put(ctx, name, data, true)
}

func (s *LocalStore) put(ctx context.Context, name string, data []byte, create bool) error {
	op := "put"
	if create {
		op = "put-if-absent"
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	path, err := s.path(name)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		if errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("%s %s: a leading part of the name is an object: %w", op, name, ErrInvalidName)
		}
		return fmt.Errorf("%s %s: %w", op, name, err)
	}
	tmp, err := os.CreateTemp(dir, tempPattern)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, name, err)
	}
	renamed := false
	defer func() {
		// After a link, or a failure, the temporary name goes.
		if !renamed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("%s %s: %w", op, name, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("%s %s: sync: %w", op, name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("%s %s: %w", op, name, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.forget(path)
	for attempt := 0; ; attempt++ {
		if create {
			renamed, err = linkNew(tmp.Name(), path)
		} else {
			err = os.Rename(tmp.Name(), path)
			renamed = err == nil
		}
		if err == nil {
			break
		}
		// The name may be a directory: objects live under it, or did (a
		// directory stays when its last object is deleted). An empty one is
		// removed and the link tried again, once.
		isDir := errors.Is(err, syscall.EISDIR)
		if errors.Is(err, fs.ErrExist) {
			fi, serr := os.Lstat(path)
			isDir = serr == nil && fi.IsDir()
			if !isDir {
				return fmt.Errorf("%s %s: %w", op, name, ErrExists)
			}
		}
		if !isDir {
			return fmt.Errorf("%s %s: %w", op, name, err)
		}
		if attempt > 0 || syscall.Rmdir(path) != nil {
			return fmt.Errorf("%s %s: objects exist under %s/: %w", op, name, name, ErrInvalidName)
		}
	}
	// A cached descriptor of what another process stored under this name
	// before (and deleted since) must not be read for the new object.
	s.forget(path)
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("%s %s: %w", op, name, err)
	}
	return nil
}

// linkNew gives the file at from the name to, failing with an error that
// wraps fs.ErrExist if to exists. It reports whether from was renamed; after
// a link(2) (the fallback for file systems without RENAME_NOREPLACE) from
// keeps its name as well, and the caller removes it.
func linkNew(from, to string) (renamed bool, err error) {
	err = unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
		err = unix.Link(from, to)
	}
	if err != nil {
		return false, &os.LinkError{Op: "link", Old: from, New: to, Err: err}
	}
	return false, nil
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
	data, err := readObjectFile(path)
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
		// Open it afresh next time: after EIO, or for a directory (no such
		// object), the descriptor is not worth keeping.
		s.forget(path)
		return notFoundOr(name, err)
	}
	return nil
}

// Stat returns the object's size and its file's modification time.
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
	return ObjectInfo{Name: name, Size: fi.Size(), ModTime: fi.ModTime()}, nil
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
		return fn(ObjectInfo{Name: name, Size: info.Size(), ModTime: info.ModTime()})
	})
	if err != nil {
		return fmt.Errorf("list %q in %s: %w", prefix, s.root, err)
	}
	return nil
}

// Delete removes the object and fsyncs its directory. A missing object
// is not an error.
func (s *LocalStore) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	path, err := s.path(name)
	if err != nil {
		return err
	}
	s.forget(path)
	// unlink(2), not os.Remove: a directory is no object, and is left alone.
	if err := syscall.Unlink(path); err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.EISDIR) {
			return nil
		}
		return fmt.Errorf("delete %s: %w", name, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// ListIsLinearizable is true: an object is a directory entry from the
// moment the link or rename that creates it returns, and List reads the
// directory afresh (see [LinearizableLister]). On NFS, opening the
// directory revalidates it (close-to-open consistency, the default);
// where a client serves a cached listing anyway (nocto, or directory
// times too coarse to show the change), it does so for up to acdirmax
// (60 s by default), which the lock's 100 ms second look never covered
// either (chain/FORMAT.md, "Safety model").
func (s *LocalStore) ListIsLinearizable() bool { return true }

// Close closes the files the store keeps open.
func (s *LocalStore) Close() error {
	s.fdMu.Lock()
	defer s.fdMu.Unlock()
	var first error
	for _, f := range s.fds {
		if err := f.Close(); err != nil && first == nil {
			first = fmt.Errorf("close local store %s: %w", s.root, err)
		}
	}
	s.fds, s.fdq = nil, nil
	return first
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

// notFoundOr wraps err with the object's name, as ErrNotFound if the file
// is not there: missing, a directory (objects live under it), or under a
// file (ENOTDIR).
func notFoundOr(name string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.EISDIR) {
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
