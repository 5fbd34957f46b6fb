package chain

import (
	"context"
	"fmt"
	"strings"
)

// Store keeps a repository's named objects. A local directory ([LocalStore])
// is the embedded default; an object store can implement the same interface.
//
// The contract every implementation keeps (storetest.Run checks it):
//
//   - Names are slash-separated relative paths of lower-case letters, digits
//     and the characters "-_.", with no empty, "." or ".." element; a name
//     that breaks this is refused with an error wrapping ErrInvalidName.
//   - Put is atomic and durable: when it returns nil, the whole object is
//     stored and survives a crash; a reader never sees a partial object.
//     Put replaces an existing object of the same name.
//   - Read-after-write: after Put returns, Get, ReadAt, Stat and List see the
//     object; after Delete returns, they do not.
//   - Get, ReadAt, Stat and Delete of a missing object return an error
//     wrapping ErrNotFound. ReadAt beyond the object's end is an error.
//   - List calls fn for every object whose name starts with prefix, in no
//     particular order; an error from fn stops the listing and is returned.
//   - Every method honours ctx: a cancelled context returns ctx.Err() soon,
//     and a Put that is cancelled leaves either nothing or the whole object.
//   - Implementations are safe for concurrent use.
type Store interface {
	Put(ctx context.Context, name string, data []byte) error
	Get(ctx context.Context, name string) ([]byte, error)
	// ReadAt fills p with the object's bytes starting at off.
	ReadAt(ctx context.Context, name string, p []byte, off int64) error
	Stat(ctx context.Context, name string) (ObjectInfo, error)
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error
	Delete(ctx context.Context, name string) error
}

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Name string
	Size int64
}

// CheckObjectName enforces the Store's naming rule.
func CheckObjectName(name string) error {
	if name == "" {
		return fmt.Errorf("object name is empty: %w", ErrInvalidName)
	}
	for _, elem := range strings.Split(name, "/") {
		if elem == "" || elem == "." || elem == ".." {
			return fmt.Errorf("object name %q: bad path element: %w", name, ErrInvalidName)
		}
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./", r)
		if !ok {
			return fmt.Errorf("object name %q: character %q not allowed: %w", name, r, ErrInvalidName)
		}
	}
	return nil
}
