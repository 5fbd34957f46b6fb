package cachestore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/zeebo/blake3"
)

// A cache file holds one object, with a checksum for each segment of it:
//
//	"dpc1" | segment size (uint32 LE) | object length L (uint64 LE) |
//	  n × BLAKE3-256 of each segment (32 bytes each, n = ceil(L / segment size)) |
//	  the object's L bytes
//
// A read checks only the segments it serves, so a 40-byte tree node read
// from a 16 MiB pack hashes 64 KiB, not the pack. The file's size must be
// exactly what its header says. chain/FORMAT.md ("The local cache") has
// the reasons.
const (
	entryMagic       = "dpc1"
	entryHeaderSize  = 16
	entrySumSize     = 32
	entrySegmentSize = 64 << 10
)

// errDamaged is in the error of a cache file that does not check out.
var errDamaged = errors.New("damaged cache file")

// encodeEntry returns the header and checksums of a cache file for data;
// the file is these bytes followed by data.
func encodeEntry(data []byte) []byte {
	n := segments(int64(len(data)), entrySegmentSize)
	head := make([]byte, entryHeaderSize, entryHeaderSize+n*entrySumSize)
	copy(head, entryMagic)
	binary.LittleEndian.PutUint32(head[4:], entrySegmentSize)
	binary.LittleEndian.PutUint64(head[8:], uint64(len(data)))
	for i := range n {
		end := min(int64(i+1)*entrySegmentSize, int64(len(data)))
		sum := blake3.Sum256(data[int64(i)*entrySegmentSize : end])
		head = append(head, sum[:]...)
	}
	return head
}

func segments(length int64, seg int) int {
	return int((length + int64(seg) - 1) / int64(seg))
}

// entryFile is an opened cache file whose header checked out.
type entryFile struct {
	r       io.ReaderAt
	length  int64 // the object's
	segment int
	sumsAt  int64
	dataAt  int64
}

// openEntry reads and checks a cache file's header; size is the file's.
func openEntry(r io.ReaderAt, size int64) (*entryFile, error) {
	var head [entryHeaderSize]byte
	if size < entryHeaderSize {
		return nil, fmt.Errorf("%w: %d bytes, shorter than a header", errDamaged, size)
	}
	if _, err := r.ReadAt(head[:], 0); err != nil {
		return nil, fmt.Errorf("%w: %w", errDamaged, err)
	}
	if string(head[:4]) != entryMagic {
		return nil, fmt.Errorf("%w: magic %q", errDamaged, head[:4])
	}
	seg := binary.LittleEndian.Uint32(head[4:])
	length := binary.LittleEndian.Uint64(head[8:])
	if seg < 4<<10 || seg > 16<<20 || seg&(seg-1) != 0 {
		return nil, fmt.Errorf("%w: segment size %d", errDamaged, seg)
	}
	if length > uint64(size) {
		return nil, fmt.Errorf("%w: says %d bytes, the file has %d", errDamaged, length, size)
	}
	n := segments(int64(length), int(seg))
	dataAt := int64(entryHeaderSize) + int64(n)*entrySumSize
	if dataAt+int64(length) != size {
		return nil, fmt.Errorf("%w: says %d bytes in %d segments, the file has %d", errDamaged, length, n, size)
	}
	return &entryFile{r: r, length: int64(length), segment: int(seg), sumsAt: entryHeaderSize, dataAt: dataAt}, nil
}

// readAt fills p with the object's bytes from off on, after checking every
// segment they lie in. Past the object's end it returns io.ErrUnexpectedEOF
// (not errDamaged: the object is shorter than the caller thought).
func (e *entryFile) readAt(p []byte, off int64) error {
	return e.checkRange(off, int64(len(p)), func(chunk []byte, start int64) {
		// Copy the part of the segment that p wants.
		from := max(off, start)
		to := min(off+int64(len(p)), start+int64(len(chunk)))
		copy(p[from-off:to-off], chunk[from-start:to-start])
	})
}

// check checks every segment that n bytes from off on lie in, as readAt
// does, without copying them anywhere.
func (e *entryFile) check(off, n int64) error {
	return e.checkRange(off, n, func([]byte, int64) {})
}

// checkRange reads and checks every segment that n bytes from off on lie
// in, and gives each to use with its offset in the object.
func (e *entryFile) checkRange(off, n int64, use func(chunk []byte, start int64)) error {
	if off < 0 || n < 0 || off+n > e.length {
		return fmt.Errorf("%d bytes at %d of a %d-byte object: %w", n, off, e.length, io.ErrUnexpectedEOF)
	}
	if n == 0 {
		return nil
	}
	seg := int64(e.segment)
	first, last := off/seg, (off+n-1)/seg
	sums := make([]byte, (last-first+1)*entrySumSize)
	if _, err := e.r.ReadAt(sums, e.sumsAt+first*entrySumSize); err != nil {
		return fmt.Errorf("%w: %w", errDamaged, err)
	}
	buf := make([]byte, min(seg, e.length))
	for i := first; i <= last; i++ {
		start := i * seg
		chunk := buf[:min(seg, e.length-start)]
		if _, err := e.r.ReadAt(chunk, e.dataAt+start); err != nil {
			return fmt.Errorf("%w: %w", errDamaged, err)
		}
		sum := blake3.Sum256(chunk)
		if string(sum[:]) != string(sums[(i-first)*entrySumSize:(i-first+1)*entrySumSize]) {
			return fmt.Errorf("%w: segment %d does not match its checksum", errDamaged, i)
		}
		use(chunk, start)
	}
	return nil
}

// readAll returns the whole object, checked.
func (e *entryFile) readAll() ([]byte, error) {
	p := make([]byte, e.length)
	if err := e.readAt(p, 0); err != nil {
		return nil, err
	}
	return p, nil
}
