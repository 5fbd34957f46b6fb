package synthdisk

import (
	"bytes"
	"io"
	"testing"
)

// Every block is unique, the same when read again, and the same however
// the reads are cut; a change rewrites about Fraction of the blocks and
// leaves the rest as they were.
func TestDisk(t *testing.T) {
	d, err := New(1000*4096+100, 4096, 7, 0.05)
	if err != nil {
		t.Fatal(err)
	}
	whole := make([]byte, d.Size)
	if n, err := d.ReadAt(whole, 0); n != len(whole) || err != nil {
		t.Fatalf("ReadAt of the whole disk: %d, %v", n, err)
	}
	seen := map[string]bool{}
	for b := int64(0); b < d.Blocks(); b++ {
		block := whole[b*4096 : min((b+1)*4096, d.Size)]
		if seen[string(block)] {
			t.Fatalf("block %d repeats an earlier one", b)
		}
		seen[string(block)] = true
	}
	// Reads cut anywhere agree with the whole.
	for _, cut := range []struct{ off, n int64 }{{0, 1}, {4090, 20}, {123457, 9000}, {d.Size - 50, 50}} {
		p := make([]byte, cut.n)
		if _, err := d.ReadAt(p, cut.off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, whole[cut.off:cut.off+cut.n]) {
			t.Errorf("read of %d bytes at %d differs from the whole", cut.n, cut.off)
		}
	}
	if n, err := d.ReadAt(make([]byte, 200), d.Size-100); n != 100 || err != io.EOF {
		t.Errorf("read past the end: %d, %v; want 100, EOF", n, err)
	}

	next := d.Change()
	after := make([]byte, d.Size)
	next.ReadAt(after, 0)
	changed := 0
	for b := int64(0); b < d.Blocks(); b++ {
		lo, hi := b*4096, min((b+1)*4096, d.Size)
		differs := !bytes.Equal(after[lo:hi], whole[lo:hi])
		if differs != next.Changed(1, b) {
			t.Fatalf("block %d: differs %v, Changed says %v", b, differs, !differs)
		}
		if differs {
			changed++
		}
	}
	if changed < 25 || changed > 80 { // 5% of 1001 is 50
		t.Errorf("a change of 5%% rewrote %d of 1001 blocks", changed)
	}
	if _, err := New(100, 4096, 1, 0); err == nil {
		t.Error("a fraction of 0 was accepted")
	}
}
