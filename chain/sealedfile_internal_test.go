package chain

import (
	"bytes"
	"errors"
	"io"
	"sync/atomic"
	"testing"
)

// Small segments keep the per-byte tests quick; the segment size is stored
// in the file, so the reader follows it.
const testSegmentShift = 6

func sealTestFile(t *testing.T, k *subkeys2, plain []byte, shift uint8, chunk int) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := newSealingWriter(&out, k.metadata, sealKindIndex, []byte("index/x"), shift)
	if err != nil {
		t.Fatal(err)
	}
	for rest := plain; len(rest) > 0; {
		n := min(chunk, len(rest))
		if _, err := w.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Fatal("wrote to a closed sealing writer")
	}
	return out.Bytes()
}

func testPlaintext(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + i/251)
	}
	return p
}

func TestSealedFileRoundTrip(t *testing.T) {
	k := testSubkeys2(t)
	seg := 1 << testSegmentShift
	for _, size := range []int{0, 1, seg - 1, seg, seg + 1, 3 * seg, 3*seg + 5} {
		for _, chunk := range []int{1, 7, seg, 1000} {
			plain := testPlaintext(size)
			sealed := sealTestFile(t, k, plain, testSegmentShift, chunk)
			f, err := k.openIndexFile(bytes.NewReader(sealed), int64(len(sealed)), "index/x")
			if err != nil {
				t.Fatalf("size %d: %v", size, err)
			}
			if f.Size() != int64(size) {
				t.Fatalf("size %d read back as %d", size, f.Size())
			}
			got, err := io.ReadAll(io.NewSectionReader(f, 0, f.Size()))
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("size %d, written %d at a time: read %d bytes, %v", size, chunk, len(got), err)
			}
			for off := 0; off <= size; off += 5 {
				p := make([]byte, 2*seg)
				n, err := f.ReadAt(p, int64(off))
				want := plain[off:min(off+len(p), size)]
				if !bytes.Equal(p[:n], want) || (n < len(p)) != (err == io.EOF) {
					t.Fatalf("size %d: ReadAt %d: %d bytes, %v", size, off, n, err)
				}
			}
		}
	}
}

// countingReaderAt counts the bytes read through it.
type countingReaderAt struct {
	r     io.ReaderAt
	bytes atomic.Int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.bytes.Add(int64(len(p)))
	return c.r.ReadAt(p, off)
}

// A small read of a large sealed file reads (and decrypts) only the
// segments it covers.
func TestSealedFileReadsOnlyTheSegmentsItNeeds(t *testing.T) {
	k := testSubkeys2(t)
	plain := testPlaintext(1 << 20)
	var out bytes.Buffer
	w, err := k.newIndexSealer(&out, "index/x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r := &countingReaderAt{r: bytes.NewReader(out.Bytes())}
	f, err := k.openIndexFile(r, int64(out.Len()), "index/x")
	if err != nil {
		t.Fatal(err)
	}
	opened := r.bytes.Load()
	p := make([]byte, 3000)
	if _, err := f.ReadAt(p, 500_000); err != nil || !bytes.Equal(p, plain[500_000:503_000]) {
		t.Fatalf("ReadAt: %v", err)
	}
	seg := int64(1)<<defaultSegmentShift + 16
	if read := r.bytes.Load() - opened; read > 2*seg {
		t.Fatalf("a 3000-byte read read %d bytes of the file, more than two segments (%d)", read, 2*seg)
	}
	if opened > int64(sealedFileHeaderSize)+seg {
		t.Fatalf("opening read %d bytes, more than the header and one segment", opened)
	}
}

func readAllSealed(k *subkeys2, sealed []byte) ([]byte, error) {
	f, err := k.openIndexFile(bytes.NewReader(sealed), int64(len(sealed)), "index/x")
	if err != nil {
		return nil, err
	}
	return io.ReadAll(io.NewSectionReader(f, 0, f.Size()))
}

func TestSealedFileDamageIsCorrupt(t *testing.T) {
	k := testSubkeys2(t)
	seg := 1 << testSegmentShift
	plain := testPlaintext(3*seg + 10)
	sealed := sealTestFile(t, k, plain, testSegmentShift, 100)
	stride := seg + 16

	mustBeCorrupt := func(what string, bad []byte) {
		t.Helper()
		if _, err := readAllSealed(k, bad); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s: %v, want ErrCorrupt", what, err)
		}
	}
	for i := range sealed {
		bad := bytes.Clone(sealed)
		bad[i] ^= 0x01
		mustBeCorrupt("a changed byte", bad)
	}
	header := sealedFileHeaderSize
	seg0 := sealed[header : header+stride]
	seg1 := sealed[header+stride : header+2*stride]
	swapped := bytes.Join([][]byte{sealed[:header], seg1, seg0, sealed[header+2*stride:]}, nil)
	mustBeCorrupt("segments swapped", swapped)
	mustBeCorrupt("cut at a segment", sealed[:header+2*stride])
	mustBeCorrupt("cut inside a segment", sealed[:header+2*stride+20])
	mustBeCorrupt("cut inside a tag", sealed[:header+2*stride+5])
	mustBeCorrupt("header only", sealed[:header])
	mustBeCorrupt("shorter than a header", sealed[:3])
	mustBeCorrupt("a segment appended", append(bytes.Clone(sealed), seg1...))

	// A segment from another file, at the same place, does not fit.
	other := sealTestFile(t, k, plain, testSegmentShift, 100)
	spliced := bytes.Join([][]byte{sealed[:header+stride], other[header+stride : header+2*stride], sealed[header+2*stride:]}, nil)
	mustBeCorrupt("a segment from another file", spliced)

	if _, err := readAllSealed(testSubkeys2(t), sealed); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("opened under another master key: %v", err)
	}
	// Sealed as another kind, it does not open as an index file.
	var lockish bytes.Buffer
	w, err := newSealingWriter(&lockish, k.metadata, sealKindLock, []byte("index/x"), testSegmentShift)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	mustBeCorrupt("sealed as another kind", lockish.Bytes())
	// Sealed as another index file, it does not open under this name.
	var renamed bytes.Buffer
	if w, err = newSealingWriter(&renamed, k.metadata, sealKindIndex, []byte("index/y"), testSegmentShift); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	mustBeCorrupt("sealed under another name", renamed.Bytes())
}

// FuzzSealedFile: whatever a sealed file's bytes, opening and reading it
// returns an error or exactly its plaintext size, and never panics; no
// segment it reads is larger than the input.
func FuzzSealedFile(f *testing.F) {
	k, err := deriveSubkeys2(make([]byte, masterKeySize), nil)
	if err != nil {
		f.Fatal(err)
	}
	for _, size := range []int{0, 10, 64, 200} {
		var out bytes.Buffer
		w, err := newSealingWriter(&out, k.metadata, sealKindIndex, []byte("index/fuzz"), testSegmentShift)
		if err != nil {
			f.Fatal(err)
		}
		if _, err := w.Write(testPlaintext(size)); err != nil {
			f.Fatal(err)
		}
		if err := w.Close(); err != nil {
			f.Fatal(err)
		}
		f.Add(out.Bytes())
	}
	f.Add([]byte("dps2\x18"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sf, err := k.openIndexFile(bytes.NewReader(data), int64(len(data)), "index/fuzz")
		if err != nil {
			return
		}
		got, err := io.ReadAll(io.NewSectionReader(sf, 0, sf.Size()))
		if err == nil && int64(len(got)) != sf.Size() {
			t.Fatalf("read %d bytes of a %d-byte plaintext", len(got), sf.Size())
		}
	})
}
