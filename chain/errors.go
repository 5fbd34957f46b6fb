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
	// ErrCorrupt: stored bytes do not match their hash or cannot be decoded.
	ErrCorrupt = errors.New("corrupt")
	// ErrLocked: another operation holds a conflicting lock.
	ErrLocked = errors.New("locked")
	// ErrExists: the object or repository already exists.
	ErrExists = errors.New("already exists")
	// ErrInvalidName: a collection, disk or restore point name is not acceptable.
	ErrInvalidName = errors.New("invalid name")
	// ErrUnsupportedVersion: the repository was written by an unknown format version.
	ErrUnsupportedVersion = errors.New("unsupported repository format version")
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
