package chain

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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
	var entries []fs.DirEntry
	f, err := os.Open(filepath.Join(s.root, filepath.FromSlash(dir)))
	if err == nil {
		entries, err = f.ReadDir(-1) // not os.ReadDir: it sorts them
		f.Close()
	}
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		if dir != "" {
			name = dir + "/" + name
		}
		switch {
		case e.IsDir():
			if under := name + "/"; strings.HasPrefix(under, prefix) || strings.HasPrefix(prefix, under) {
				if err := s.listNamesIn(ctx, name, prefix, fn); err != nil {
					return err
				}
			}
		case e.Type().IsRegular() && !strings.HasPrefix(e.Name(), tempPrefix) && strings.HasPrefix(name, prefix):
			if err := fn(name); err != nil {
				return err
			}
		}
	}
	return nil
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
