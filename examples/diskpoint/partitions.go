package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"

	"github.com/diskfs/go-diskfs/partition"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/diskfs/go-diskfs/partition/mbr"
)

// diskPartition is one partition of a disk image: where its bytes are.
type diskPartition struct {
	Number int // its number in the table, from 1, as Linux numbers sdaN
	Start  int64
	Size   int64
	Name   string // a GPT partition's name, or an MBR partition's type
}

// errNoPartitionTable: the image has neither a GPT nor an MBR; its file
// system, if any, starts at its first byte.
var errNoPartitionTable = errors.New("no partition table")

// readPartitions reads the partition table of a disk image of size bytes
// with github.com/diskfs/go-diskfs (GPT first, then MBR; only an MBR's
// primary partitions), and checks that every partition lies within the
// image. The image comes from a repository, so nothing in it is trusted.
func readPartitions(image io.ReaderAt, size int64) ([]diskPartition, error) {
	f := &imageFile{io.NewSectionReader(image, 0, size)}
	var table partition.Table
	var err error
	for _, sector := range []int{512, 4096} { // 4Kn disks put their GPT at 4096
		if err = checkGPTHeader(f, int64(sector)); err != nil {
			return nil, err
		}
		if table, err = gpt.Read(f, sector, sector); err == nil {
			break
		}
	}
	if err != nil {
		if table, err = mbr.Read(f, 512, 512); err != nil {
			return nil, errNoPartitionTable
		}
		if err := checkMBR(table.(*mbr.Table)); err != nil {
			return nil, err
		}
	}
	var parts []diskPartition
	for _, p := range table.GetPartitions() {
		if p.GetSize() == 0 {
			continue // an unused entry
		}
		start, length := p.GetStart(), p.GetSize()
		if start <= 0 || length < 0 || start > size || length > size-start {
			return nil, fmt.Errorf("partition %d ([%d, +%d)) lies outside the %d-byte disk", p.GetIndex(), start, length, size)
		}
		d := diskPartition{Number: p.GetIndex(), Start: start, Size: length}
		switch p := p.(type) {
		case *gpt.Partition:
			d.Name = p.Name
		case *mbr.Partition:
			d.Name = fmt.Sprintf("type 0x%02x", byte(p.Type))
		}
		parts = append(parts, d)
	}
	return parts, nil
}

// GPT partition arrays this reader accepts: the specification's entry
// size is 128 times a power of two, and tools make 128 entries.
const (
	maxGPTEntries   = 16384
	maxGPTEntrySize = 4096
)

// checkGPTHeader refuses a GPT header at sector whose partition array
// go-diskfs would take too literally: an entry size of 0 loops forever,
// and a huge count or size allocates without bound before any checksum
// is checked.
func checkGPTHeader(f io.ReaderAt, sector int64) error {
	var header [92]byte
	if _, err := f.ReadAt(header[:], sector); err != nil || string(header[:8]) != "EFI PART" {
		return nil // no GPT here
	}
	count, size := binary.LittleEndian.Uint32(header[80:]), binary.LittleEndian.Uint32(header[84:])
	if count > maxGPTEntries || size < 128 || size > maxGPTEntrySize || size%128 != 0 {
		return fmt.Errorf("the GPT header at byte %d has %d partition entries of %d bytes: not a table this reads", sector, count, size)
	}
	return nil
}

// checkMBR refuses what this reader cannot follow: extended partitions
// (the logical ones inside are in a chain it does not read) and a
// protective MBR, whose GPT could not be read.
func checkMBR(t *mbr.Table) error {
	for _, p := range t.Partitions {
		switch byte(p.Type) {
		case 0x05, 0x0f, 0x85:
			return fmt.Errorf("partition %d is an MBR extended partition: its logical partitions are not read", p.Index)
		case 0xee:
			return errors.New("the disk has a protective MBR, but its GPT cannot be read")
		}
	}
	return nil
}

// imageFile is the file go-diskfs reads a partition table from.
type imageFile struct{ *io.SectionReader }

func (imageFile) Stat() (fs.FileInfo, error) { return nil, errors.ErrUnsupported }
func (imageFile) Close() error               { return nil }
