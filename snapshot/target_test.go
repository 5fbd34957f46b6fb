package snapshot

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// writeBlocks writes blocks held apart in memory as one stretch of the
// target, also when there are more of them than one pwritev takes.
func TestWriteBlocksMoreThanOneCallTakes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "target.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	tg := &target{path: path, file: f}
	var blocks [][]byte
	var want bytes.Buffer
	for i := range maxIOVecs + 500 {
		b := []byte(fmt.Sprintf("block %05d|", i))
		blocks = append(blocks, b)
		want.Write(b)
	}
	const at = 4096 + 7
	if err := tg.writeBlocks(at, blocks); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != at+want.Len() || !bytes.Equal(got[at:], want.Bytes()) || !bytes.Equal(got[:at], make([]byte, at)) {
		t.Fatalf("wrote %d bytes, want %d zeros then %d bytes of blocks in order", len(got), at, want.Len())
	}
}
