package blockdiff

import (
	"errors"
	"fmt"
	"runtime/debug"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A segmentMap is one segment of a disk image mapped read-only into memory,
// so that its blocks are hashed where they lie in the page cache instead of
// being copied out by pread first (as b3sum does). Only files read through
// the page cache are mapped; block devices are read with O_DIRECT.
//
// The mapping is shared with the guest: its bytes change as the disk is
// written, even between two reads of one block. So mapped bytes are only
// compared (hashed, to find a block equal to its parent's); a block to be
// stored is first copied into memory of the scan's own, and that copy is
// what is hashed and stored (see scanner.identify).
//
// A mapped file that shrinks while it is read faults (SIGBUS) instead of
// returning a short read: the function that maps a segment defers
// guardFaults.
type segmentMap struct {
	data []byte
	off  int64 // the disk offset of data[0]
}

// mapSegment maps [off, off+length) of d. It returns nil, nil when d is not
// to be mapped (a block device, or a file the kernel refuses to map), in
// which case the caller reads with pread (or a reader disk's ReadAt).
func (d *Disk) mapSegment(off, length int64) (*segmentMap, error) {
	if d.file == nil || d.Direct || d.BlockDevice || d.noMap.Load() || length == 0 {
		return nil, nil
	}
	data, err := unix.Mmap(int(d.file.Fd()), off, int(length), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		if errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EINVAL) {
			d.noMap.Store(true) // a file system without mmap: pread it is
			return nil, nil
		}
		return nil, fmt.Errorf("map %s at %d: %w", d.Path, off, err)
	}
	return &segmentMap{data: data, off: off}, nil
}

// run returns the n bytes at disk offset off, read into the page cache
// and mapped in one call (MADV_POPULATE_READ) rather than page by page.
func (m *segmentMap) run(d *Disk, off int64, n int64) ([]byte, error) {
	p := m.data[off-m.off : off-m.off+n]
	err := unix.Madvise(p, unix.MADV_POPULATE_READ)
	switch {
	case err == nil, errors.Is(err, unix.EINVAL): // EINVAL: a kernel before 5.14; fault pages in as read
		return p, nil
	case errors.Is(err, unix.EFAULT):
		return nil, errEndedEarly(d, off)
	default:
		return nil, fmt.Errorf("read %s at %d: %w", d.Path, off, err)
	}
}

func (m *segmentMap) base() uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(m.data))) }

func (m *segmentMap) contains(addr uintptr) bool {
	return addr >= m.base() && addr < m.base()+uintptr(len(m.data))
}

func (m *segmentMap) unmap() { unix.Munmap(m.data) }

// guardFaults unmaps *m when the function that mapped it returns, and
// turns a fault on its pages (the file shrank, or its storage failed, after
// the pages were populated) into an error in *err instead of a crash. Use
// as: defer guardFaults(d, &m, &err)() on the goroutine that touches the
// mapping.
func guardFaults(d *Disk, m **segmentMap, err *error) func() {
	old := debug.SetPanicOnFault(true)
	return func() {
		debug.SetPanicOnFault(old)
		mapped := *m
		if mapped == nil {
			return
		}
		defer mapped.unmap()
		r := recover()
		if r == nil {
			return
		}
		if f, ok := r.(interface{ Addr() uintptr }); ok && mapped.contains(f.Addr()) {
			at := mapped.off + int64(f.Addr()-mapped.base())
			*err = fmt.Errorf("read %s at %d: fault on the mapped disk (did it shrink while being read?)", d.Path, at)
			return
		}
		panic(r)
	}
}
