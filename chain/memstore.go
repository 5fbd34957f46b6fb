package chain

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// MemStore is a [Store] in memory: for tests, and for repositories that are
// thrown away (it keeps nothing across a restart).
type MemStore struct {
	mu      sync.RWMutex
	objects map[string]memObject
	// dirs counts the objects under each "directory": every proper prefix
	// of an object's name that ends at a '/'. It enforces the rule that no
	// object's name is a path prefix of another's, as a file system must.
	dirs map[string]int
}

type memObject struct {
	data    []byte
	modTime time.Time
}

var (
	_ Store              = (*MemStore)(nil)
	_ LinearizableLister = (*MemStore)(nil)
)

// NewMemStore returns an empty in-memory store.
func NewMemStore() *MemStore {
	return &MemStore{objects: make(map[string]memObject), dirs: make(map[string]int)}
}

// Put stores a copy of data under name.
func (s *MemStore) Put(ctx context.Context, name string, data []byte) error {
	return s.put(ctx, "put", name, data, false)
}

// PutIfAbsent stores a copy of data under name if no object has that name.
func (s *MemStore) PutIfAbsent(ctx context.Context, name string, data []byte) error {
	return s.put(ctx, "put-if-absent", name, data, true)
}

func (s *MemStore) put(ctx context.Context, op, name string, data []byte, create bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := CheckObjectName(name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, exists := s.objects[name]
	if exists && create {
		return fmt.Errorf("%s %s: %w", op, name, ErrExists)
	}
	if s.dirs[name] > 0 {
		return fmt.Errorf("%s %s: objects exist under %s/: %w", op, name, name, ErrInvalidName)
	}
	for dir := range parentDirs(name) {
		if _, ok := s.objects[dir]; ok {
			return fmt.Errorf("%s %s: a leading part of the name is an object: %w", op, name, ErrInvalidName)
		}
	}
	if !exists {
		for dir := range parentDirs(name) {
			s.dirs[dir]++
		}
	}
	s.objects[name] = memObject{data: append([]byte(nil), data...), modTime: time.Now()}
	return nil
}

// parentDirs yields the proper prefixes of name that end before a '/':
// "a" and "a/b" for "a/b/c".
func parentDirs(name string) func(yield func(string) bool) {
	return func(yield func(string) bool) {
		for i := range len(name) {
			if name[i] == '/' && !yield(name[:i]) {
				return
			}
		}
	}
}

func (s *MemStore) lookup(ctx context.Context, name string) (memObject, error) {
	if err := ctx.Err(); err != nil {
		return memObject{}, err
	}
	if err := CheckObjectName(name); err != nil {
		return memObject{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	obj, ok := s.objects[name]
	if !ok {
		return memObject{}, fmt.Errorf("object %s: %w", name, ErrNotFound)
	}
	return obj, nil
}

// Get returns a copy of the object.
func (s *MemStore) Get(ctx context.Context, name string) ([]byte, error) {
	obj, err := s.lookup(ctx, name)
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), obj.data...), nil
}

// ReadAt fills p from the object at offset off.
func (s *MemStore) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	obj, err := s.lookup(ctx, name)
	if err != nil {
		return err
	}
	if off < 0 || off+int64(len(p)) > int64(len(obj.data)) {
		return fmt.Errorf("read %s: %d bytes at %d of %d: %w", name, len(p), off, len(obj.data), io.ErrUnexpectedEOF)
	}
	copy(p, obj.data[off:])
	return nil
}

// Stat returns the object's size and when it was stored.
func (s *MemStore) Stat(ctx context.Context, name string) (ObjectInfo, error) {
	obj, err := s.lookup(ctx, name)
	if err != nil {
		return ObjectInfo{}, err
	}
	return ObjectInfo{Name: name, Size: int64(len(obj.data)), ModTime: obj.modTime}, nil
}

// List calls fn for each object whose name starts with prefix.
func (s *MemStore) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	s.mu.RLock()
	var infos []ObjectInfo
	for name, obj := range s.objects {
		if strings.HasPrefix(name, prefix) {
			infos = append(infos, ObjectInfo{Name: name, Size: int64(len(obj.data)), ModTime: obj.modTime})
		}
	}
	s.mu.RUnlock()
	for _, info := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

// Delete removes the object. A missing object is not an error.
func (s *MemStore) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := CheckObjectName(name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.objects[name]; !ok {
		return nil
	}
	delete(s.objects, name)
	for dir := range parentDirs(name) {
		if s.dirs[dir]--; s.dirs[dir] == 0 {
			delete(s.dirs, dir)
		}
	}
	return nil
}

// ListIsLinearizable is true: one lock orders every create and listing
// (see [LinearizableLister]).
func (s *MemStore) ListIsLinearizable() bool { return true }

// Close does nothing: the objects stay for as long as the MemStore does.
func (s *MemStore) Close() error { return nil }
