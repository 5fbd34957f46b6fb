package chain

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/chacha20poly1305"
)

// A sealed file is a large object (an index file) sealed in segments, so
// that part of it can be read and authenticated without the rest: an index
// lookup reads one bucket, not the whole file. It is the STREAM
// construction of Hoang, Reyhanitabar, Rogaway and Vizár ("Online
// Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", 2015),
// as age and Tink's streaming AEAD use it:
//
//	"dps2" | log2 of the segment size (1) | nonce prefix (16) | segment 0 | segment 1 | ...
//
// Every segment but the last holds exactly one segment size of plaintext;
// the last holds the rest, 1 byte to a whole segment (none only when the
// file is empty). A segment is its ciphertext and a 16-byte tag; its nonce
// is the file's random prefix and the segment's number (uint64 LE), and its
// associated data is sealAD(kind, context | log2 segment size | last), last
// being 1 for the final segment and 0 otherwise. So a segment cannot be
// moved within a file or to another file (the nonce differs), and the file
// cannot be cut at a segment boundary unseen (the new final segment was not
// sealed as last).

const (
	sealedFileMagic       = "dps2"
	sealedFileHeaderSize  = len(sealedFileMagic) + 1 + sealedFileNoncePrefix
	sealedFileNoncePrefix = chacha20poly1305.NonceSizeX - 8
	// defaultSegmentShift: 4 KiB segments. A lookup reads an index bucket
	// of about 3.3 KiB, so it decrypts one or two segments (4-8 KiB); the
	// tags cost 16 bytes in 4 KiB (0.4%). 16 KiB segments made a sealed
	// lookup four times slower (FORMAT.md has the figures).
	defaultSegmentShift = 12
	minSegmentShift     = 6
	maxSegmentShift     = 24
)

func sealedFileAD(kind sealKind, context []byte, shift uint8, last bool) []byte {
	tail := []byte{shift, 0}
	if last {
		tail[1] = 1
	}
	return sealAD(kind, append(append([]byte(nil), context...), tail...))
}

func sealedFileNonce(prefix *[sealedFileNoncePrefix]byte, segment uint64) []byte {
	nonce := make([]byte, 0, chacha20poly1305.NonceSizeX)
	nonce = append(nonce, prefix[:]...)
	return binary.LittleEndian.AppendUint64(nonce, segment)
}

// sealingWriter seals what is written to it into w as a sealed file; Close
// seals the final segment. It holds one segment of plaintext, whatever the
// file's size.
type sealingWriter struct {
	w        io.Writer
	aead     cipher.AEAD
	kind     sealKind
	context  []byte
	shift    uint8
	prefix   [sealedFileNoncePrefix]byte
	buf      []byte
	segments uint64
	err      error
}

func newSealingWriter(w io.Writer, aead cipher.AEAD, kind sealKind, context []byte, shift uint8) (*sealingWriter, error) {
	if shift < minSegmentShift || shift > maxSegmentShift {
		return nil, fmt.Errorf("segment size 2^%d: want 2^%d to 2^%d", shift, minSegmentShift, maxSegmentShift)
	}
	s := &sealingWriter{w: w, aead: aead, kind: kind, context: context, shift: shift,
		buf: make([]byte, 0, 1<<shift+chacha20poly1305.Overhead)}
	_, _ = rand.Read(s.prefix[:]) // crypto/rand.Read does not fail (Go 1.24 on)
	header := append([]byte(sealedFileMagic), shift)
	if _, err := w.Write(append(header, s.prefix[:]...)); err != nil {
		return nil, err
	}
	return s, nil
}

// Write buffers p, sealing each segment once more data follows it (only
// then is it known not to be the last).
func (s *sealingWriter) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n := len(p)
	size := 1 << s.shift
	for len(p) > 0 {
		if len(s.buf) == size {
			if s.err = s.flush(false); s.err != nil {
				return n - len(p), s.err
			}
		}
		take := min(size-len(s.buf), len(p))
		s.buf = append(s.buf, p[:take]...)
		p = p[take:]
	}
	return n, nil
}

func (s *sealingWriter) flush(last bool) error {
	ad := sealedFileAD(s.kind, s.context, s.shift, last)
	sealed := s.aead.Seal(s.buf[:0], sealedFileNonce(&s.prefix, s.segments), s.buf, ad)
	s.segments++
	_, err := s.w.Write(sealed)
	s.buf = s.buf[:0]
	return err
}

// Close seals the final segment; it does not close w.
func (s *sealingWriter) Close() error {
	if s.err != nil {
		return s.err
	}
	s.err = s.flush(true)
	if s.err == nil {
		s.err = errors.New("sealed file closed")
		return nil
	}
	return s.err
}

// sealedFileReader reads a sealed file's plaintext at any offset, reading
// and authenticating only the segments the range covers.
type sealedFileReader struct {
	r        io.ReaderAt
	name     string
	aead     cipher.AEAD
	kind     sealKind
	context  []byte
	shift    uint8
	prefix   [sealedFileNoncePrefix]byte
	segments int64
	size     int64
}

// openSealedFile reads the header and the final segment of the sealed file
// name (storedSize bytes, read through r), and so knows its plaintext size.
func openSealedFile(r io.ReaderAt, storedSize int64, name string, aead cipher.AEAD, kind sealKind, context []byte) (*sealedFileReader, error) {
	if storedSize < int64(sealedFileHeaderSize) {
		return nil, corrupt(name, "sealed file of %d bytes, shorter than its header", storedSize)
	}
	header := make([]byte, sealedFileHeaderSize)
	if _, err := r.ReadAt(header, 0); err != nil {
		return nil, fmt.Errorf("%s: read header: %w", name, err)
	}
	if string(header[:len(sealedFileMagic)]) != sealedFileMagic {
		return nil, corrupt(name, "not a sealed file (magic %q)", header[:len(sealedFileMagic)])
	}
	f := &sealedFileReader{r: r, name: name, aead: aead, kind: kind, context: context, shift: header[len(sealedFileMagic)]}
	if f.shift < minSegmentShift || f.shift > maxSegmentShift {
		return nil, corrupt(name, "segment size 2^%d out of range", f.shift)
	}
	copy(f.prefix[:], header[len(sealedFileMagic)+1:])
	tag := int64(chacha20poly1305.Overhead)
	stride := int64(1)<<f.shift + tag
	body := storedSize - int64(sealedFileHeaderSize)
	full, rest := body/stride, body%stride
	switch {
	case rest == 0 && full > 0:
		f.segments, f.size = full, full<<f.shift
	case rest >= tag:
		f.segments, f.size = full+1, full<<f.shift+rest-tag
	default:
		return nil, corrupt(name, "sealed file of %d bytes does not end at a segment", storedSize)
	}
	// The final segment says the file ends there: checking it now makes
	// the size authentic, so a file cut short is caught at once.
	if _, err := f.segment(f.segments - 1); err != nil {
		return nil, err
	}
	return f, nil
}

// with returns a copy of f that reads its segments through r: a file opened
// once is read through the context of each later call.
func (f *sealedFileReader) with(r io.ReaderAt) *sealedFileReader {
	g := *f
	g.r = r
	return &g
}

// Size is the plaintext's size.
func (f *sealedFileReader) Size() int64 { return f.size }

// ReadAt reads plaintext as io.ReaderAt does. Damage in a segment it reads
// is ErrCorrupt naming the file and the segment.
func (f *sealedFileReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: read at negative offset %d", f.name, off)
	}
	n := 0
	for n < len(p) && off < f.size {
		segment := off >> f.shift
		plain, err := f.segment(segment)
		if err != nil {
			return n, err
		}
		c := copy(p[n:], plain[off-segment<<f.shift:])
		n += c
		off += int64(c)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// segment reads, authenticates and returns the plaintext of segment i.
func (f *sealedFileReader) segment(i int64) ([]byte, error) {
	length := int64(1) << f.shift
	last := i == f.segments-1
	if last {
		length = f.size - i<<f.shift
	}
	tag := int64(chacha20poly1305.Overhead)
	buf := make([]byte, length+tag)
	at := int64(sealedFileHeaderSize) + i*(int64(1)<<f.shift+tag)
	if _, err := f.r.ReadAt(buf, at); err != nil {
		return nil, fmt.Errorf("%s: read segment %d: %w", f.name, i, err)
	}
	plain, err := f.aead.Open(buf[:0], sealedFileNonce(&f.prefix, uint64(i)), buf, sealedFileAD(f.kind, f.context, f.shift, last))
	if err != nil {
		return nil, corrupt(f.name, "segment %d: %v", i, errUnauthentic)
	}
	return plain, nil
}

// newIndexSealer returns a writer that seals the index file name into w
// under the metadata key. The name is the context of every segment's
// associated data, so that a sealed file cannot be passed off under
// another file's name.
func (k *subkeys2) newIndexSealer(w io.Writer, name string) (*sealingWriter, error) {
	return newSealingWriter(w, k.metadata, sealKindIndex, []byte(name), defaultSegmentShift)
}

// openIndexFile reads the sealed index file name (storedSize bytes, read
// through r): its ReadAt gives the plaintext index file.
func (k *subkeys2) openIndexFile(r io.ReaderAt, storedSize int64, name string) (*sealedFileReader, error) {
	return openSealedFile(r, storedSize, name, k.metadata, sealKindIndex, []byte(name))
}

// sealedFilePlainSize is the plaintext size of a sealed file of storedSize
// bytes whose segments are 2^shift bytes, or -1 if no such file has that
// size.
func sealedFilePlainSize(storedSize int64, shift uint8) int64 {
	tag := int64(chacha20poly1305.Overhead)
	stride := int64(1)<<shift + tag
	body := storedSize - int64(sealedFileHeaderSize)
	if body < tag {
		return -1
	}
	full, rest := body/stride, body%stride
	switch {
	case rest == 0:
		return full << shift
	case rest >= tag:
		return full<<shift + rest - tag
	}
	return -1
}
