package cachestore

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzEntry feeds arbitrary bytes to the cache-file decoder as a file: it
// never panics, a read fails with errDamaged or io.ErrUnexpectedEOF, and a
// read that succeeds returns bytes whose file encodes back to the input.
func FuzzEntry(f *testing.F) {
	for _, data := range [][]byte{nil, []byte("tree node"), bytes.Repeat([]byte{1, 2, 3}, 22000)} {
		f.Add(append(encodeEntry(data), data...), int64(0), 16)
	}
	f.Fuzz(func(t *testing.T, file []byte, off int64, n int) {
		if n < 0 || n > 1<<20 {
			return
		}
		e, err := openEntry(bytes.NewReader(file), int64(len(file)))
		if err != nil {
			if !errors.Is(err, errDamaged) {
				t.Fatalf("openEntry: %v, want errDamaged", err)
			}
			return
		}
		p := make([]byte, n)
		if err := e.readAt(p, off); err != nil && !errors.Is(err, errDamaged) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("readAt: %v", err)
		}
		all, err := e.readAll()
		if err != nil {
			return
		}
		if e.segment == entrySegmentSize && !bytes.Equal(append(encodeEntry(all), all...), file) {
			t.Fatal("a file that checks out does not encode back to itself")
		}
	})
}
