package chain

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/diskpoint/diskpoint/chain/internal/mmapfile"
)

// ObjectMapper is a Store that can map part of an object read-only into
// memory: an index file's tables are then read where they lie, outside the
// Go heap, instead of copied into it (FORMAT.md, "Version 2: index
// files", "Reading"). Only objects whose bytes never change under their
// name, and whose files are never truncated or written in place, may be
// mapped: a store replaces or deletes a file (rename, unlink), and a
// mapping keeps the bytes it mapped. A store that cannot map an object
// returns an error wrapping errors.ErrUnsupported, and the caller reads it
// with ReadAt instead.
type ObjectMapper interface {
	// MapObject maps length bytes of the object name from off on. The
	// bytes are valid until unmap is called, and must not be written.
	MapObject(ctx context.Context, name string, off, length int64) (data []byte, unmap func() error, err error)
}

var (
	_ ObjectMapper = (*LocalStore)(nil)
	_ ObjectMapper = (*RetryStore)(nil)
)

// MapObject maps part of the object's file. Put writes a new file and
// renames it over the name, Delete unlinks it, so a mapping keeps the
// bytes it mapped whatever happens to the name.
func (s *LocalStore) MapObject(ctx context.Context, name string, off, length int64) ([]byte, func() error, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	path, err := s.path(name)
	if err != nil {
		return nil, nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, notFoundOr(name, err)
	}
	defer f.Close()
	data, unmap, err := mmapfile.Map(f, off, length)
	if err != nil {
		return nil, nil, fmt.Errorf("object %s: %w", name, err)
	}
	return data, unmap, nil
}

// MapObject maps through the wrapped store, when it can: mapping is a
// local operation, not retried.
func (s *RetryStore) MapObject(ctx context.Context, name string, off, length int64) ([]byte, func() error, error) {
	m, ok := s.store.(ObjectMapper)
	if !ok {
		return nil, nil, fmt.Errorf("map %s: %w", name, errors.ErrUnsupported)
	}
	return m.MapObject(ctx, name, off, length)
}
