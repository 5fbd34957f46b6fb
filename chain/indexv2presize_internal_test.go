package chain

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// An index file built in a presized buffer is the same bytes as one built
// without, and is that buffer: finish encodes the tables around the
// entries instead of copying them (a checkpoint's entries would otherwise
// be held twice, 13 MiB more at the peak of a create). A presize that
// guessed the packs wrong still gives the same bytes, copied.
func TestIndexV2PresizedFileIsBuiltInPlace(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1, 63, 5000, 70000} {
		t.Run(fmt.Sprint(n, " entries"), func(t *testing.T) {
			packs := make([]ID, 1+n/1000)
			for i := range packs {
				packs[i] = randomID(rng)
			}
			entries := randomIndexEntries(rng, n, packs)
			slices.SortFunc(entries, func(a, b indexEntry) int { return bytes.Compare(a.ID[:], b.ID[:]) })
			distinct := map[ID]bool{}
			for _, e := range entries {
				distinct[e.Pack] = true
			}
			build := func(w *indexV2Writer) []byte {
				t.Helper()
				w.noteWritten(1_700_000_000)
				for _, e := range entries {
					if err := w.add(e); err != nil {
						t.Fatal(err)
					}
				}
				file, err := w.finish()
				if err != nil {
					t.Fatal(err)
				}
				return file
			}
			want := build(newIndexV2Writer(maxIndexEntries))

			w := newIndexV2Writer(maxIndexEntries)
			w.presize(n, len(distinct))
			buffer := &w.file[:cap(w.file)][0]
			got := build(w)
			if !bytes.Equal(got, want) {
				t.Fatal("the presized file differs from the file built without presize")
			}
			if &got[0] != buffer {
				t.Error("finish copied the presized file into a buffer of its own")
			}
			// The writer keeps nothing of the file it handed over.
			if again := build(w); !bytes.Equal(again, want) || &again[0] == buffer {
				t.Error("a second file from the same writer is not built afresh")
			}

			w = newIndexV2Writer(maxIndexEntries)
			w.presize(n, len(distinct)+1) // the tables in front a pack too long
			if got := build(w); !bytes.Equal(got, want) {
				t.Fatal("a file presized for the wrong pack count differs from the file built without presize")
			}
		})
	}
}
