package mmapfile

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Map maps length bytes of f from off on, read-only and shared, and
// returns them with the function that unmaps them (safe to call more than
// once; the bytes must not be touched after it). The mapping outlives f:
// the caller may close f at once. off need not be page-aligned. A length
// of 0, or a range past the file's end, is refused: touching a mapped page
// past the end of the file raises SIGBUS.
func Map(f *os.File, off, length int64) ([]byte, func() error, error) {
	if off < 0 || length <= 0 {
		return nil, nil, fmt.Errorf("map %s: %d bytes at %d", f.Name(), length, off)
	}
	info, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("map %s: %w", f.Name(), err)
	}
	if !info.Mode().IsRegular() || off+length > info.Size() {
		return nil, nil, fmt.Errorf("map %s: %d bytes at %d of a %d-byte file: %w", f.Name(), length, off, info.Size(), errors.ErrUnsupported)
	}
	page := int64(os.Getpagesize())
	start := off &^ (page - 1)
	whole, err := unix.Mmap(int(f.Fd()), start, int(off-start+length), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, fmt.Errorf("map %s: %w", f.Name(), err)
	}
	live.Add(1)
	name := f.Name() // not f: the mapping does not keep the descriptor open
	var once sync.Once
	unmap := func() error {
		var err error
		once.Do(func() {
			live.Add(-1)
			if uerr := unix.Munmap(whole); uerr != nil {
				err = fmt.Errorf("unmap %s: %w", name, uerr)
			}
		})
		return err
	}
	return whole[off-start:], unmap, nil
}

// live counts the mappings made and not yet unmapped.
var live atomic.Int64

// Live returns how many mappings Map made are not unmapped yet: tests
// check that readers give theirs back.
func Live() int64 { return live.Load() }
