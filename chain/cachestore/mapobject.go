package cachestore

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/chain/internal/mmapfile"
)

var _ chain.ObjectMapper = (*Store)(nil)

// MapObject maps length bytes from off on of a kept object's cache file
// (fetched first if it is not there), once the segments they lie in check
// out: a mapping is checked once, when it is made, where ReadAt checks
// every read. A cache file is written to a temporary file and renamed into
// place, and dropped with unlink, never truncated or written in place, so
// a mapping keeps the bytes it checked whatever happens to the file's
// name. An object the cache does not keep is not mapped
// (errors.ErrUnsupported): the caller reads it.
func (s *Store) MapObject(ctx context.Context, name string, off, length int64) ([]byte, func() error, error) {
	if err := chain.CheckObjectName(name); err != nil {
		return nil, nil, err
	}
	if !s.opts.Keep(ctx, name) {
		return nil, nil, fmt.Errorf("map %s: not kept in the cache: %w", name, errors.ErrUnsupported)
	}
	for range 2 {
		data, unmap, err := s.mapCached(name, off, length)
		if err == nil {
			return data, unmap, nil
		}
		if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, errDamaged) {
			return nil, nil, fmt.Errorf("map %s: %w", name, err)
		}
		if _, _, err := s.fetch(ctx, name); err != nil {
			return nil, nil, err
		}
	}
	// Fetched, but not kept (larger than the cache, or no room on disk).
	return nil, nil, fmt.Errorf("map %s: not in the cache: %w", name, errors.ErrUnsupported)
}

// mapCached maps part of name's cache file after checking it. A missing
// file is os.ErrNotExist; a damaged one is dropped and errDamaged.
func (s *Store) mapCached(name string, off, length int64) ([]byte, func() error, error) {
	f, info, err := s.openFile(name)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	// The check and the mapping use one descriptor: a file renamed over
	// the name meanwhile is neither checked nor mapped.
	e, err := openEntry(f, info.Size())
	if err == nil {
		err = e.check(off, length)
	}
	if err != nil {
		if errors.Is(err, errDamaged) {
			s.dropDamaged(name)
		}
		return nil, nil, err
	}
	data, unmap, err := mmapfile.Map(f, e.dataAt+off, length)
	if err != nil {
		return nil, nil, err
	}
	s.hit(name, info)
	return data, unmap, nil
}
