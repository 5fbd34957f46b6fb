package blockdiff

import (
	"fmt"
	"io"
)

// NewReaderDisk makes a disk of r's first size bytes, for disks that are
// not files: a hypervisor's NBD client, a generated disk in a test or a
// benchmark. A scan reads all of it through r.ReadAt, from several
// goroutines at once (as io.ReaderAt allows), into its own buffers: there
// are no holes to skip and nothing to map, and all-zero blocks are found
// by reading them. name is what messages call the disk. Closing the Disk
// leaves r open: it is the caller's.
func NewReaderDisk(name string, r io.ReaderAt, size int64) (*Disk, error) {
	switch {
	case r == nil:
		return nil, fmt.Errorf("disk %s: no reader", name)
	case size <= 0:
		return nil, fmt.Errorf("disk %s: size %d: a disk has a positive size", name, size)
	}
	return &Disk{Path: name, Size: size, reader: r}, nil
}

// IsFile reports whether the disk is a regular file opened by its path:
// the only kind of disk a reflink clone (ReflinkClone) can copy.
func (d *Disk) IsFile() bool { return d.file != nil && !d.BlockDevice }
