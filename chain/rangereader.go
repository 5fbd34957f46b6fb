package chain

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// rangeReader reads part of one object: what a reader of a large object
// needs without fetching all of it. A store object and a local file (a
// cache) both are one.
type rangeReader interface {
	// ReadAt fills p with the object's bytes from off on; reading past
	// the end is an error wrapping io.ErrUnexpectedEOF.
	ReadAt(ctx context.Context, p []byte, off int64) error
}

// storeObjectRange reads the object name of store.
type storeObjectRange struct {
	store Store
	name  string
}

func (o storeObjectRange) ReadAt(ctx context.Context, p []byte, off int64) error {
	return o.store.ReadAt(ctx, o.name, p, off)
}

// readerAtRange reads from an io.ReaderAt, such as an *os.File. The read
// itself cannot be cancelled; the context is checked before it.
type readerAtRange struct{ r io.ReaderAt }

func (r readerAtRange) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n, err := r.r.ReadAt(p, off)
	if n == len(p) {
		return nil // io.ReaderAt may report io.EOF with a read that ends at the end
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read %d bytes at %d: got %d: %w", len(p), off, n, err)
}
