package chain

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// NameLister is what a [Store] may offer beside List: the names alone.
// ListNames calls fn with the name of every object List would report, in
// no particular order, and nothing else. A store implements it when the
// names cost it less than the rest of what List reports: LocalStore reads
// its directories and stats no file, where List stats every one for its
// size and time (a listing of 10,000 restore points is then 10,000 lstat
// calls fewer). Object stores list names with sizes anyway and need not.
// Decorators (RetryStore, the sealed store of an encrypted repository)
// pass it through.
type NameLister interface {
	ListNames(ctx context.Context, prefix string, fn func(name string) error) error
}

// listNames returns the names of the objects under prefix: through
// ListNames where store has it, else through List.
func listNames(ctx context.Context, store Store, prefix string) ([]string, error) {
	var names []string
	err := eachName(ctx, store, prefix, func(name string) error {
		names = append(names, name)
		return nil
	})
	return names, err
}

// eachName calls fn with the name of every object under prefix, through
// ListNames where store has it, else through List.
func eachName(ctx context.Context, store Store, prefix string, fn func(name string) error) error {
	if nl, ok := store.(NameLister); ok {
		return nl.ListNames(ctx, prefix, fn)
	}
	return store.List(ctx, prefix, func(info ObjectInfo) error { return fn(info.Name) })
}

var _ NameLister = (*LocalStore)(nil)

// ListNames lists what List lists, from the directory entries alone: no
// file is stat'ed (an entry's type comes with it from getdents on the file
// systems that matter; os.ReadDir stats only where it does not), entries
// are not sorted, and only directories that can hold names with prefix
// are read.
func (s *LocalStore) ListNames(ctx context.Context, prefix string, fn func(name string) error) error {
	dir := ""
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		dir = prefix[:i]
	}
	if err := s.listNamesIn(ctx, dir, prefix, fn); err != nil {
		return fmt.Errorf("list %q in %s: %w", prefix, s.root, err)
	}
	return nil
}

// listNamesIn lists the names under the directory of objects dir ("" for
// the root) that begin with prefix. A directory removed while it is
// listed, or that is no directory, holds nothing.
func (s *LocalStore) listNamesIn(ctx context.Context, dir, prefix string, fn func(name string) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	path := filepath.Join(s.root, filepath.FromSlash(dir))
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil
	}
	if err != nil {
		return err
	}
	// Entries are collected before anything is called (fn, or a listing of
	// a subdirectory), so that one directory is open at a time.
	var subdirs, names []string
	var nameBuf []byte
	if dir != "" {
		nameBuf = append(append(nameBuf, dir...), '/')
	}
	base := len(nameBuf)
	err = readDirEntries(f, func(entry []byte, typ byte) error {
		if typ == unix.DT_UNKNOWN { // a file system that does not say: ask
			info, err := os.Lstat(filepath.Join(path, string(entry)))
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil // deleted while listing
				}
				return err
			}
			switch {
			case info.IsDir():
				typ = unix.DT_DIR
			case info.Mode().IsRegular():
				typ = unix.DT_REG
			}
		}
		nameBuf = append(nameBuf[:base], entry...)
		switch {
		case typ == unix.DT_DIR:
			if under := string(nameBuf) + "/"; strings.HasPrefix(under, prefix) || strings.HasPrefix(prefix, under) {
				subdirs = append(subdirs, string(nameBuf))
			}
		case typ == unix.DT_REG && !bytes.HasPrefix(entry, []byte(tempPrefix)) && bytes.HasPrefix(nameBuf, []byte(prefix)):
			names = append(names, string(nameBuf))
		}
		return nil
	})
	f.Close()
	if errors.Is(err, syscall.ENOTDIR) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := fn(name); err != nil {
			return err
		}
	}
	for _, d := range subdirs {
		if err := s.listNamesIn(ctx, d, prefix, fn); err != nil {
			return err
		}
	}
	return nil
}

// readDirEntries calls fn with the name and type (unix.DT_*) of each entry
// of the directory f but "." and "..", in the order getdents64 gives them,
// with one buffer for the whole directory: a listing of 10,000 restore
// points allocates each name once, where os.File.ReadDir allocates an
// entry and its name besides (what a create pays to check a heads record;
// BenchmarkHeadsSetCheck). name is only valid during the call.
func readDirEntries(f *os.File, fn func(name []byte, typ byte) error) error {
	buf := make([]byte, 32<<10)
	conn, err := f.SyscallConn()
	if err != nil {
		return err
	}
	for {
		var n int
		var derr error
		if err := conn.Read(func(fd uintptr) bool {
			n, derr = unix.Getdents(int(fd), buf)
			return derr != unix.EAGAIN
		}); err != nil {
			return err
		}
		if derr == unix.EINTR {
			continue
		}
		if derr != nil {
			return derr
		}
		if n <= 0 {
			return nil
		}
		// struct linux_dirent64: ino (8), off (8), reclen (2), type (1),
		// the name, NUL-terminated, padded to reclen.
		for off := 0; off+19 <= n; {
			reclen := int(binary.NativeEndian.Uint16(buf[off+16:]))
			if reclen < 19 || off+reclen > n {
				return fmt.Errorf("getdents64: a record of %d bytes at %d of %d", reclen, off, n)
			}
			name := buf[off+19 : off+reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			typ := buf[off+18]
			off += reclen
			if string(name) == "." || string(name) == ".." {
				continue
			}
			if err := fn(name, typ); err != nil {
				return err
			}
		}
	}
}

var _ NameLister = (*RetryStore)(nil)

// ListNames lists through the wrapped store's ListNames (or its List),
// retrying as [RetryStore.List] does: a name already reported by a failed
// attempt is not reported again.
func (s *RetryStore) ListNames(ctx context.Context, prefix string, fn func(name string) error) error {
	return retryListing(ctx, s, prefix, func(name string) string { return name },
		func(each func(string) error) error { return eachName(ctx, s.store, prefix, each) }, fn)
}

var _ NameLister = (*sealedStore)(nil)

// ListNames lists the inner store's names: sealing changes no name.
func (s *sealedStore) ListNames(ctx context.Context, prefix string, fn func(name string) error) error {
	return eachName(ctx, s.inner, prefix, fn)
}
