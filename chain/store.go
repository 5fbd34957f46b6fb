package chain

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Store keeps a repository's named objects. A local directory ([LocalStore])
// is the embedded default; an object store can implement the same interface.
// Decorators wrap a Store and are Stores themselves: [RetryStore] retries
// transient failures, and storetest.FaultStore injects faults for tests.
//
// The contract every implementation keeps (storetest.Run checks it):
//
//   - Names are slash-separated relative paths; every element is a name that
//     [CheckName] accepts (ASCII letters of either case, digits and "._-",
//     not starting with '.', 1 to 255 bytes). Upper and lower case are
//     different names. A name that breaks this is refused with an error
//     wrapping ErrInvalidName ([CheckObjectName] says which).
//   - No object's name is a path prefix of another's, at a '/' boundary:
//     while "a/b" exists there is no object "a", and the other way round
//     (a directory on a file system cannot also be a file). Put or
//     PutIfAbsent of such a name is refused with an error wrapping
//     ErrInvalidName, and the store is left as it was.
//   - Put is atomic and durable: when it returns nil, the whole object is
//     stored and survives a crash; a reader never sees a partial object.
//     Put replaces an existing object of the same name.
//   - PutIfAbsent is Put that only creates: if the object exists it returns
//     an error wrapping ErrExists and leaves the object as it was. It is
//     atomic across processes and hosts: of any number of PutIfAbsent calls
//     of one name, at most one succeeds, and the object then holds its data.
//     It is how objects that must never be replaced are written: the config,
//     manifests and lock objects.
//   - Read-after-write: after Put or PutIfAbsent returns, Get, ReadAt, Stat
//     and List see the object; after Delete returns, they do not.
//   - Get, ReadAt and Stat of a missing object return an error wrapping
//     ErrNotFound.
//   - ReadAt is the ranged read: it fills p with the object's bytes from off
//     on, and is how large objects (packs) are read in part, so that a
//     restore never fetches a whole pack for one blob. ReadAt beyond the
//     object's end is an error wrapping io.ErrUnexpectedEOF (the object is
//     shorter than the caller expected), and not ErrTransient.
//   - Delete removes an object. Delete of a missing object may return nil
//     (an S3 DELETE does) or an error wrapping ErrNotFound: callers treat the
//     two alike. LocalStore and MemStore return nil.
//   - Stat and List report ObjectInfo.ModTime from the store's clock (a
//     file's mtime, an object store's Last-Modified), never the client's,
//     so that processes on hosts with different clocks can compare ages.
//   - List calls fn for every object whose name starts with prefix, in no
//     particular order; an error from fn stops the listing and is returned.
//   - Every method honours ctx: a cancelled context returns an error wrapping
//     ctx.Err() soon, and a Put that is cancelled leaves either nothing or
//     the whole object.
//   - Errors say whether trying again can help. A failure that may go away
//     if retried (a timeout, a connection reset, a throttled or unavailable
//     server: HTTP 429, 500, 502, 503, 504) wraps ErrTransient. Everything
//     else is permanent: ErrNotFound, ErrExists, ErrInvalidName, a refused
//     permission, a local I/O error such as EIO or ENOSPC. Errors name the
//     object.
//   - Close releases what the store holds (open files, connections). No
//     other method may be called after Close or while it runs; calling
//     Close again returns nil.
//   - Implementations are safe for concurrent use.
type Store interface {
	// Put stores data under name, replacing any object of that name.
	Put(ctx context.Context, name string, data []byte) error
	// PutIfAbsent stores data under name only if no such object exists;
	// otherwise it returns an error wrapping ErrExists.
	PutIfAbsent(ctx context.Context, name string, data []byte) error
	// Get returns the whole object.
	Get(ctx context.Context, name string) ([]byte, error)
	// ReadAt fills p with the object's bytes starting at off: the ranged
	// read, for reading part of a large object.
	ReadAt(ctx context.Context, name string, p []byte, off int64) error
	// Stat returns the object's size and modification time.
	Stat(ctx context.Context, name string) (ObjectInfo, error)
	// List calls fn for every object whose name starts with prefix.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error
	// Delete removes the object; a missing object is not an error.
	Delete(ctx context.Context, name string) error
	// Close releases the store's resources.
	Close() error
}

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Name string
	Size int64
	// ModTime is when the object was last written, by the store's clock.
	ModTime time.Time
}

// CheckObjectName enforces the Store's naming rule: a slash-separated path
// whose every element is a name [CheckName] accepts. Elements never start
// with '.', which leaves such names to a store's own use (LocalStore's
// temporary files).
func CheckObjectName(name string) error {
	if name == "" {
		return fmt.Errorf("object name is empty: %w", ErrInvalidName)
	}
	for elem := range strings.SplitSeq(name, "/") {
		if err := CheckName("path element", elem); err != nil {
			return fmt.Errorf("object name %q: %w", name, err)
		}
	}
	return nil
}
