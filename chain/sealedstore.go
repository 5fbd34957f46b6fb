package chain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
)

// sealedStore is how an encrypted version 2 repository sees its store: a
// Store whose objects are sealed under the key ring's metadata key on the
// way in and opened on the way out, by what they are (FORMAT.md, "Version
// 2: keys and encryption"):
//
//   - config and keys/ pass as they are: they are read before the key ring
//     is open (the config is authenticated by its MAC, a key object by its
//     own seal);
//   - packs pass as they are: their blobs and header are sealed inside them
//     (writer.go, pack.go), and their names are the hashes of those bytes;
//   - index/ objects are sealed files (sealedfile.go), so that ReadAt reads
//     and opens only the segments a range covers: an index lookup reads one
//     bucket, never the whole file;
//   - locks/ objects are sealed as locks, everything else (manifests,
//     state/, logs/, garbage/, and any object a later version adds) as a
//     named object; both bind the object's name.
//
// So the code that reads and writes index files, locks, manifests, garbage
// records and state is the same for a plain and an encrypted repository,
// and nothing can be written under an encrypted repository's names
// unsealed by mistake.
type sealedStore struct {
	inner Store
	keys  *subkeys2

	mu    sync.Mutex
	files map[string]*sealedFileReader // opened index files, by name
}

// maxOpenSealedFiles bounds sealedStore.files: a repository of 10 million
// chunks has about 40 index files, and an entry is about 200 bytes.
const maxOpenSealedFiles = 4096

func newSealedStore(inner Store, keys *subkeys2) *sealedStore {
	return &sealedStore{inner: inner, keys: keys, files: map[string]*sealedFileReader{}}
}

// Unwrap returns the store the sealed objects are in.
func (s *sealedStore) Unwrap() Store { return s.inner }

// objectSealing says how the object name is stored.
type objectSealing int

const (
	sealedAsIs objectSealing = iota
	sealedFile
	sealedLock
	sealedNamed
)

func sealingOf(name string) objectSealing {
	switch {
	case name == configName, strings.HasPrefix(name, keysPrefix), strings.HasPrefix(name, "packs/"):
		return sealedAsIs
	case strings.HasPrefix(name, indexPrefix):
		return sealedFile
	case strings.HasPrefix(name, lockPrefix):
		return sealedLock
	}
	return sealedNamed
}

// seal returns data as the object name is stored.
func (s *sealedStore) seal(name string, data []byte) ([]byte, error) {
	switch sealingOf(name) {
	case sealedFile:
		var out bytes.Buffer
		out.Grow(sealedFileHeaderSize + len(data) + len(data)>>(defaultSegmentShift-4) + 32)
		w, err := s.keys.newIndexSealer(&out, name)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(data); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		return out.Bytes(), nil
	case sealedLock:
		return s.keys.sealLock(name, data), nil
	case sealedNamed:
		return s.keys.sealNamed(name, data), nil
	}
	return data, nil
}

// open undoes seal; damage is ErrCorrupt naming the object.
func (s *sealedStore) open(name string, stored []byte) ([]byte, error) {
	switch sealingOf(name) {
	case sealedFile:
		f, err := s.keys.openIndexFile(bytes.NewReader(stored), int64(len(stored)), name)
		if err != nil {
			return nil, err
		}
		plain := make([]byte, f.Size())
		if _, err := f.ReadAt(plain, 0); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		return plain, nil
	case sealedLock:
		return s.keys.openLock(name, stored)
	case sealedNamed:
		return s.keys.openNamed(name, stored)
	}
	return stored, nil
}

// Put seals data and stores it.
func (s *sealedStore) Put(ctx context.Context, name string, data []byte) error {
	sealed, err := s.seal(name, data)
	if err != nil {
		return fmt.Errorf("seal %s: %w", name, err)
	}
	s.forget(name)
	return s.inner.Put(ctx, name, sealed)
}

// PutIfAbsent seals data and stores it if name is free.
func (s *sealedStore) PutIfAbsent(ctx context.Context, name string, data []byte) error {
	sealed, err := s.seal(name, data)
	if err != nil {
		return fmt.Errorf("seal %s: %w", name, err)
	}
	return s.inner.PutIfAbsent(ctx, name, sealed)
}

// Get returns the object's plaintext.
func (s *sealedStore) Get(ctx context.Context, name string) ([]byte, error) {
	stored, err := s.inner.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	plain, err := s.open(name, stored)
	if err != nil && sealingOf(name) != sealedFile && errors.Is(err, ErrCorrupt) {
		// Still version 1's object, in a repository whose migration was
		// interrupted after its config switch: its version 2 seal is
		// staged (migrateencrypted.go) until a rerun moves it here.
		if staged, serr := s.inner.Get(ctx, migrateStagePrefix+name); serr == nil {
			if plain, serr := s.open(name, staged); serr == nil {
				return plain, nil
			}
		}
	}
	return plain, err
}

// ReadAt reads the object's plaintext from off. A sealed file (an index
// file) reads and opens only the segments the range covers; a pack is read
// as it is (its blobs are sealed one by one); any other sealed object is
// read whole and opened.
func (s *sealedStore) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	switch sealingOf(name) {
	case sealedAsIs:
		return s.inner.ReadAt(ctx, name, p, off)
	case sealedFile:
		return s.readFileAt(ctx, name, p, off)
	}
	plain, err := s.Get(ctx, name)
	if err != nil {
		return err
	}
	if off < 0 || off+int64(len(p)) > int64(len(plain)) {
		return fmt.Errorf("read %s: %d bytes at %d of %d: %w", name, len(p), off, len(plain), io.ErrUnexpectedEOF)
	}
	copy(p, plain[off:])
	return nil
}

// readFileAt reads an index file's plaintext. Its header and size are read
// once and kept; a segment that does not open with what was kept is tried
// once more with the file opened afresh, since an object of the same name
// (the same plaintext: the name is its hash) may have been stored again,
// under another nonce prefix.
func (s *sealedStore) readFileAt(ctx context.Context, name string, p []byte, off int64) error {
	for attempt := 0; ; attempt++ {
		f, cached, err := s.sealedFile(ctx, name)
		if err != nil {
			return err
		}
		n, err := f.with(storeReaderAt{ctx, s.inner, name}).ReadAt(p, off)
		switch {
		case errors.Is(err, ErrCorrupt) && cached && attempt == 0:
			s.forget(name)
			continue
		case n == len(p):
			return nil
		case err == nil || errors.Is(err, io.EOF):
			return fmt.Errorf("read %s: %d bytes at %d of %d: %w", name, len(p), off, f.Size(), io.ErrUnexpectedEOF)
		}
		return err
	}
}

// sealedFile returns the opened index file name, and whether it was kept
// from an earlier read.
func (s *sealedStore) sealedFile(ctx context.Context, name string) (*sealedFileReader, bool, error) {
	s.mu.Lock()
	f := s.files[name]
	s.mu.Unlock()
	if f != nil {
		return f, true, nil
	}
	info, err := s.inner.Stat(ctx, name)
	if err != nil {
		return nil, false, err
	}
	f, err = s.keys.openIndexFile(storeReaderAt{ctx, s.inner, name}, info.Size, name)
	if err != nil {
		return nil, false, err
	}
	f = f.with(nil)
	s.mu.Lock()
	if len(s.files) >= maxOpenSealedFiles {
		clear(s.files)
	}
	s.files[name] = f
	s.mu.Unlock()
	return f, false, nil
}

func (s *sealedStore) forget(name string) {
	if sealingOf(name) != sealedFile {
		return
	}
	s.mu.Lock()
	delete(s.files, name)
	s.mu.Unlock()
}

// Stat reports an index file's plaintext size, what its reader reads; other
// objects' sizes are as stored.
func (s *sealedStore) Stat(ctx context.Context, name string) (ObjectInfo, error) {
	info, err := s.inner.Stat(ctx, name)
	if err == nil {
		info = plainInfo(info)
	}
	return info, err
}

// List reports index files at their plaintext sizes, as Stat does.
func (s *sealedStore) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	return s.inner.List(ctx, prefix, func(info ObjectInfo) error { return fn(plainInfo(info)) })
}

// plainInfo turns a stored index file's size into its plaintext's, which
// follows from the stored size: writers use 2^defaultSegmentShift-byte
// segments. A size no such file has is left as it is; opening the file
// then reports it damaged.
func plainInfo(info ObjectInfo) ObjectInfo {
	if sealingOf(info.Name) == sealedFile {
		if n := sealedFilePlainSize(info.Size, defaultSegmentShift); n >= 0 {
			info.Size = n
		}
	}
	return info
}

// Delete removes the object.
func (s *sealedStore) Delete(ctx context.Context, name string) error {
	s.forget(name)
	return s.inner.Delete(ctx, name)
}

// Close closes the inner store.
func (s *sealedStore) Close() error { return s.inner.Close() }

// storeReaderAt is an io.ReaderAt over one store object, for a sealed file
// reader, with the context of the call it serves.
type storeReaderAt struct {
	ctx   context.Context
	store Store
	name  string
}

func (r storeReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if err := r.store.ReadAt(r.ctx, r.name, p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}
