package chain

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error returned by this package that means one of
// these wraps it, so callers test with errors.Is.
var (
	// ErrNotFound: the named object, blob, collection or restore point does not exist.
	ErrNotFound = errors.New("not found")
	// ErrCorrupt: bytes were read and they are wrong: they do not match their
	// hash, fail authentication or cannot be decoded, or an index disagrees
	// with what it describes. A store or I/O failure is never ErrCorrupt.
	ErrCorrupt = errors.New("corrupt")
	// ErrLocked: another operation holds a conflicting lock.
	ErrLocked = errors.New("locked")
	// ErrExists: the object or repository already exists.
	ErrExists = errors.New("already exists")
	// ErrInvalidName: a collection, disk, restore point or object name is not
	// acceptable, or an object name collides with another's path (see [Store]).
	ErrInvalidName = errors.New("invalid name")
	// ErrTransient: a failure that may go away if retried: a timeout, a
	// connection reset, a throttled or unavailable server. A [Store] wraps
	// it around such failures (never around ErrNotFound, ErrExists,
	// ErrInvalidName or ErrCorrupt), and [RetryStore] retries only them. It
	// does not mean the operation had no effect: a Put that failed
	// transiently may have stored its object.
	ErrTransient = errors.New("transient failure")
	// ErrUnsupportedVersion: the repository was written by an unknown format version.
	ErrUnsupportedVersion = errors.New("unsupported repository format version")
	// ErrFormatChanged: the repository was converted to another format
	// version (diskpoint migrate) since it was opened; open it again.
	ErrFormatChanged = errors.New("repository format changed since it was opened; open it again")
)

// CorruptError says which object is damaged and how. It wraps ErrCorrupt.
type CorruptError struct {
	Object string // the damaged object: "pack 3fa1…", "blob 9c0e… in pack 3fa1…", "manifest vm1/…"
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("%s: %s: %s", e.Object, ErrCorrupt, e.Reason)
}

func (e *CorruptError) Unwrap() error { return ErrCorrupt }

func corrupt(object, format string, args ...any) error {
	return &CorruptError{Object: object, Reason: fmt.Sprintf(format, args...)}
}
