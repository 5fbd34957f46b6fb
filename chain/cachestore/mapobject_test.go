package cachestore_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A kept object is mapped from its cache file: fetched once if missing,
// checked when mapped (a damaged file is fetched again, never mapped), and
// an object the cache does not keep is not mapped.
func TestMapObjectMapsCheckedCacheFiles(t *testing.T) {
	ctx := context.Background()
	s, remote, dir, data := newThreeSegmentCase(t)
	if err := remote.Put(ctx, "index/aa", data); err != nil {
		t.Fatal(err)
	}
	off, length := int64(70_000), int64(90_000) // in the second and third segments
	mapOnce := func(what string) {
		t.Helper()
		got, unmap, err := s.MapObject(ctx, "index/aa", off, length)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		defer unmap()
		if !bytes.Equal(got, data[off:off+length]) {
			t.Fatalf("%s: mapped the wrong bytes", what)
		}
	}

	remote.reset()
	mapOnce("not cached yet")
	if fetched := remote.reset()["index"]; fetched != int64(len(data)) {
		t.Fatalf("not cached yet: fetched %d bytes; want the object once", fetched)
	}
	mapOnce("cached")
	if fetched := total(remote.reset()); fetched != 0 {
		t.Fatalf("cached: fetched %d bytes; want none", fetched)
	}

	file := filepath.Join(dir, "objects", "index", "aa")
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)-1] ^= 1 // the last segment, which the mapping covers
	if err := os.WriteFile(file, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	before := s.Stats().Damaged
	mapOnce("damaged")
	if s.Stats().Damaged != before+1 || remote.reset()["index"] != int64(len(data)) {
		t.Fatalf("damaged: stats %+v; want the damage seen and the object fetched again", s.Stats())
	}

	if err := remote.Put(ctx, "manifests/c/p", data); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.MapObject(ctx, "manifests/c/p", 0, 10); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("an object the cache does not keep: %v; want errors.ErrUnsupported", err)
	}
}
