package blockdiff

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Disk is an open disk, read-only: a regular file or a block device
// (OpenDisk), or any io.ReaderAt of known size (NewReaderDisk).
type Disk struct {
	// Path is the file's path, or the name a reader disk was given: what
	// messages call the disk.
	Path        string
	Size        int64
	BlockDevice bool
	// Direct: reads bypass the page cache (O_DIRECT). Block devices are
	// read so, because a file system mounted on one writes file data around
	// the device's cache: a cached read could return blocks as they were
	// before the last restore point.
	Direct bool
	file   *os.File
	reader io.ReaderAt // a reader disk's source; file is nil then
	// A reader disk's data ranges, nil if all of it may hold data (see
	// ReaderDiskOptions), and who closes its reader.
	data   []Range
	closer io.Closer
	// readsInFlight: how many reads a scan keeps going at once, at least
	// (ReaderDiskOptions.ReadsInFlight).
	readsInFlight int
	noMap         atomic.Bool // the file system refused mmap: read with pread
}

// OpenDisk opens the disk at path for reading. It refuses what cannot be a
// disk: a missing path, a directory, an empty file, a character device.
func OpenDisk(ctx context.Context, path string) (*Disk, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("disk %s: %w", path, err)
	}
	d, err := newDisk(path, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return d, nil
}

func newDisk(path string, f *os.File) (*Disk, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("disk %s: %w", path, err)
	}
	d := &Disk{Path: path, file: f}
	switch mode := fi.Mode(); {
	case mode.IsDir():
		return nil, fmt.Errorf("disk %s: is a directory, not a disk image or block device", path)
	case mode.IsRegular():
		d.Size = fi.Size()
	case mode&os.ModeDevice != 0 && mode&os.ModeCharDevice == 0:
		d.BlockDevice = true
		if d.Size, err = blockDeviceSize(f); err != nil {
			return nil, fmt.Errorf("disk %s: %w", path, err)
		}
		if direct, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0); err == nil {
			f.Close()
			d.file, d.Direct = direct, true
		} else if err := dropCache(f); err != nil {
			return nil, fmt.Errorf("disk %s: cannot bypass or drop the page cache: %w", path, err)
		}
	default:
		return nil, fmt.Errorf("disk %s: %s is neither a regular file nor a block device", path, mode.Type())
	}
	if d.Size == 0 {
		return nil, fmt.Errorf("disk %s: is empty (size 0)", path)
	}
	return d, nil
}

// dropCache flushes and invalidates a block device's page cache (BLKFLSBUF),
// for devices that refuse O_DIRECT.
func dropCache(f *os.File) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKFLSBUF, 0)
	if errno != 0 {
		return fmt.Errorf("BLKFLSBUF: %w", errno)
	}
	return nil
}

func blockDeviceSize(f *os.File) (int64, error) {
	var size uint64
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size)))
	if errno != 0 {
		return 0, fmt.Errorf("BLKGETSIZE64: %w", errno)
	}
	return int64(size), nil
}

// ReadAt reads from the disk.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	if d.reader != nil {
		return d.reader.ReadAt(p, off)
	}
	return d.file.ReadAt(p, off)
}

// Close closes the disk. A reader disk's source is the caller's to close,
// unless it was given a Closer.
func (d *Disk) Close() error {
	if d.file == nil {
		if d.closer != nil {
			return d.closer.Close()
		}
		return nil
	}
	return d.file.Close()
}

// dataExtents returns the parts of [off, off+length) that hold data: for a
// sparse file, everything but its holes (found with SEEK_DATA/SEEK_HOLE);
// for a reader disk, its Data ranges; for a block device, a reader disk
// without Data, or a file system without hole reporting, all of it.
func (d *Disk) dataExtents(off, length int64, dst []Range) []Range {
	dst = dst[:0]
	if d.reader != nil {
		return d.readerData(off, length, dst)
	}
	if d.BlockDevice {
		return append(dst, Range{off, length})
	}
	end := off + length
	fd := int(d.file.Fd())
	for pos := off; pos < end; {
		data, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if err != nil {
			if err == unix.ENXIO { // no data after pos: the rest is a hole
				return dst
			}
			return append(dst, Range{pos, end - pos}) // no hole support: read it all
		}
		if data >= end {
			return dst
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil || hole > end {
			hole = end
		}
		dst = append(dst, Range{data, hole - data})
		pos = hole
	}
	return dst
}
