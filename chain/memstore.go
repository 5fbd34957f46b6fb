package chain

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
)

// MemStore is a [Store] in memory: for tests, and for repositories that are
// thrown away (it keeps nothing across a restart).
type MemStore struct {
	mu      sync.RWMutex
	objects map[string][]byte
}

var _ Store = (*MemStore)(nil)

// NewMemStore returns an empty in-memory store.
func NewMemStore() *MemStore { return &MemStore{objects: make(map[string][]byte)} }

// Put stores a copy of data under name.
func (s *MemStore) Put(ctx context.Context, name string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := CheckObjectName(name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objects[name] = append([]byte(nil), data...)
	return nil
}

func (s *MemStore) lookup(ctx context.Context, name string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := CheckObjectName(name); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	data, ok := s.objects[name]
	if !ok {
		return nil, fmt.Errorf("object %s: %w", name, ErrNotFound)
	}
	return data, nil
}

// Get returns a copy of the object.
func (s *MemStore) Get(ctx context.Context, name string) ([]byte, error) {
	data, err := s.lookup(ctx, name)
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), data...), nil
}

// ReadAt fills p from the object at offset off.
func (s *MemStore) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	data, err := s.lookup(ctx, name)
	if err != nil {
		return err
	}
	if off < 0 || off+int64(len(p)) > int64(len(data)) {
		return fmt.Errorf("read %s: %d bytes at %d of %d: %w", name, len(p), off, len(data), io.ErrUnexpectedEOF)
	}
	copy(p, data[off:])
	return nil
}

// Stat returns the object's size.
func (s *MemStore) Stat(ctx context.Context, name string) (ObjectInfo, error) {
	data, err := s.lookup(ctx, name)
	if err != nil {
		return ObjectInfo{}, err
	}
	return ObjectInfo{Name: name, Size: int64(len(data))}, nil
}

// List calls fn for each object whose name starts with prefix.
func (s *MemStore) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	s.mu.RLock()
	var infos []ObjectInfo
	for name, data := range s.objects {
		if strings.HasPrefix(name, prefix) {
			infos = append(infos, ObjectInfo{Name: name, Size: int64(len(data))})
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

// Delete removes the object.
func (s *MemStore) Delete(ctx context.Context, name string) error {
	if _, err := s.lookup(ctx, name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.objects, name)
	return nil
}
