package blockdiff

import (
	"fmt"
	"io"
	"sort"
)

// NewReaderDisk makes a disk of r's first size bytes, for disks that are
// not files: a hypervisor's NBD client, a generated disk in a test or a
// benchmark. A scan reads all of it through r.ReadAt, from several
// goroutines at once (as io.ReaderAt allows), into its own buffers: there
// are no holes to skip and nothing to map, and all-zero blocks are found
// by reading them. name is what messages call the disk. Closing the Disk
// leaves r open: it is the caller's.
func NewReaderDisk(name string, r io.ReaderAt, size int64) (*Disk, error) {
	return NewReaderDiskWith(name, r, size, ReaderDiskOptions{})
}

// ReaderDiskOptions say more of a reader disk (NewReaderDiskWith).
type ReaderDiskOptions struct {
	// Data, if not nil, lists the ranges that may hold data, in order,
	// disjoint and inside the disk: an NBD server's base:allocation, say.
	// The rest reads as zeroes; a scan counts it as holes and reads none
	// of it. Nil means all of the disk may hold data.
	Data []Range
	// Closer, if set, is closed by Disk.Close: the disk owns its reader.
	Closer io.Closer
	// ReadsInFlight, for a reader whose reads wait on a peer (an NBD
	// server), is how many reads a scan of changed ranges keeps going at
	// once: a ChangedOnly scan whose Options.Workers is 0 runs this many
	// workers if that is more than GOMAXPROCS, so that the CPUs hash and
	// compress while its short reads wait. A scan of the whole disk, whose
	// reads are long, keeps one worker per CPU.
	ReadsInFlight int
}

// NewReaderDiskWith is NewReaderDisk with what more the caller knows of
// the disk: where its data is, and who closes its reader.
func NewReaderDiskWith(name string, r io.ReaderAt, size int64, opts ReaderDiskOptions) (*Disk, error) {
	switch {
	case r == nil:
		return nil, fmt.Errorf("disk %s: no reader", name)
	case size <= 0:
		return nil, fmt.Errorf("disk %s: size %d: a disk has a positive size", name, size)
	}
	end := int64(0)
	for _, d := range opts.Data {
		if d.Offset < end || d.Length <= 0 || d.Length > size-d.Offset {
			return nil, fmt.Errorf("disk %s: data range %d+%d is out of order, empty or outside the disk (%d bytes)", name, d.Offset, d.Length, size)
		}
		end = d.End()
	}
	return &Disk{Path: name, Size: size, reader: r, data: opts.Data, closer: opts.Closer, readsInFlight: opts.ReadsInFlight}, nil
}

// readerData is dataExtents for a reader disk: the parts of [off,
// off+length) its Data ranges cover, or all of it if it has none.
func (d *Disk) readerData(off, length int64, dst []Range) []Range {
	if d.data == nil {
		return append(dst, Range{off, length})
	}
	end := off + length
	i := sort.Search(len(d.data), func(i int) bool { return d.data[i].End() > off })
	for ; i < len(d.data) && d.data[i].Offset < end; i++ {
		s, e := max(d.data[i].Offset, off), min(d.data[i].End(), end)
		dst = append(dst, Range{s, e - s})
	}
	return dst
}

// IsFile reports whether the disk is a regular file opened by its path:
// the only kind of disk a reflink clone (ReflinkClone) can copy.
func (d *Disk) IsFile() bool { return d.file != nil && !d.BlockDevice }
