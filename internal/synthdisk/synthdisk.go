// Package synthdisk makes disks of any size out of thin air, for the tests
// and benchmarks that need repositories of millions of chunks: a 10 million
// chunk repository at 16 KiB blocks is 160 GB of disk, which this machine
// cannot hold as an image, but can generate as it is read.
//
// Every block of a Disk is unique and compresses to a few bytes: it starts
// with the disk's seed, the block's number and the generation that last
// wrote it, and is zeros after that. Changing a fraction of the blocks
// makes the next generation, as a VM's writes between two restore points
// would.
package synthdisk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// headerSize is what each block holds before its zeros.
const headerSize = 24

// Disk is a generated disk: an io.ReaderAt over Size bytes, in blocks of
// BlockSize. It is a value: Change returns a new one and leaves d as it was.
type Disk struct {
	Size      int64
	BlockSize int
	Seed      uint64
	// Generation counts the changes; block b was last written by the
	// newest generation g <= Generation that changed it (see Changed).
	Generation uint64
	// Fraction is the share of blocks each generation after the first
	// changes, in (0, 1].
	Fraction float64
}

// New returns generation 0 of a disk of size bytes in blocks of blockSize,
// whose later generations each change fraction of its blocks.
func New(size int64, blockSize int, seed uint64, fraction float64) (Disk, error) {
	switch {
	case size <= 0 || blockSize < headerSize:
		return Disk{}, fmt.Errorf("synthdisk: size %d, block size %d: want both positive, a block of at least %d bytes", size, blockSize, headerSize)
	case fraction <= 0 || fraction > 1:
		return Disk{}, fmt.Errorf("synthdisk: fraction %v: want (0, 1]", fraction)
	}
	return Disk{Size: size, BlockSize: blockSize, Seed: seed, Fraction: fraction}, nil
}

// Blocks is the number of blocks; the last may be short.
func (d Disk) Blocks() int64 { return (d.Size + int64(d.BlockSize) - 1) / int64(d.BlockSize) }

// Change returns the next generation: Fraction of the blocks rewritten.
func (d Disk) Change() Disk {
	d.Generation++
	return d
}

// Changed reports whether generation g (>= 1) rewrote block b. Which
// blocks a generation changes is a hash of (seed, g, b): scattered, as a
// VM's writes are, and the same every time it is asked.
func (d Disk) Changed(g uint64, b int64) bool {
	h := mix(d.Seed ^ mix(g) ^ mix(uint64(b)+0x9e3779b97f4a7c15))
	return float64(h>>11)/(1<<53) < d.Fraction
}

// writtenBy is the generation that last wrote block b (it asks each
// generation in turn: benchmarks take a few).
func (d Disk) writtenBy(b int64) uint64 {
	for g := d.Generation; g > 0; g-- {
		if d.Changed(g, b) {
			return g
		}
	}
	return 0
}

// ReadAt fills p with the disk's bytes at off.
func (d Disk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("synthdisk: negative offset")
	}
	if off >= d.Size {
		return 0, io.EOF
	}
	n := len(p)
	if rest := d.Size - off; int64(n) > rest {
		n = int(rest)
	}
	clear(p[:n])
	bs := int64(d.BlockSize)
	for b := off / bs; b*bs < off+int64(n); b++ {
		var header [headerSize]byte
		binary.LittleEndian.PutUint64(header[0:], d.Seed)
		binary.LittleEndian.PutUint64(header[8:], uint64(b))
		binary.LittleEndian.PutUint64(header[16:], d.writtenBy(b))
		// The part of the header that falls inside p.
		start := b * bs
		for i := range header {
			if at := start + int64(i) - off; at >= 0 && at < int64(n) && start+int64(i) < d.Size {
				p[at] = header[i]
			}
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// mix is SplitMix64's finaliser: a cheap, well-spread hash of x.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
