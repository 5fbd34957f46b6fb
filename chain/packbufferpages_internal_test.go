package chain

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"testing"
)

// A buffer whose pack was a tree pack goes back to the spares with its
// pages given back (they read as zeros again): a tree pack fills its
// buffer whole, and the data packs of tiny blobs that reuse it would keep
// all of it resident (see dropPages). Without the drop the spares hold
// the tree nodes' bytes.
func TestTreePackBuffersGiveTheirPagesBack(t *testing.T) {
	ctx := context.Background()
	for _, version := range []int{FormatVersion, FormatVersion2} {
		t.Run(fmt.Sprint("version ", version), func(t *testing.T) {
			drainPackBuffers()
			repo := newRepositoryOfVersion(t, NewMemStore(), version)
			w, err := repo.NewWriter(ctx, "test")
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			// Tree nodes enough for a few full packs: incompressible bytes.
			node := make([]byte, 64<<10)
			for i := 0; i < 4*repo.config.PackSize/len(node); i++ {
				for j := 0; j < len(node); j += 8 {
					binary.LittleEndian.PutUint64(node[j:], uint64(i)*0x9E3779B97F4A7C15+uint64(j)*0xBF58476D1CE4E5B9)
				}
				if _, err := w.PutBlob(ctx, TreeBlob, Hash(node), node); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			spares := drainPackBuffers()
			if len(spares) == 0 {
				t.Fatal("no spare pack buffer after the writer's packs were written")
			}
			for i, b := range spares {
				if !b.mapped {
					continue // from the heap: nothing to give back
				}
				if k := bytes.IndexFunc(b.mem, func(r rune) bool { return r != 0 }); k >= 0 {
					t.Errorf("spare buffer %d of %d still holds a tree pack's bytes (at %d): its pages were not given back", i, len(spares), k)
				}
			}
		})
	}
}

// drainPackBuffers takes every spare pack buffer out of the free list and
// returns them (their mappings are left to the process's end).
func drainPackBuffers() []*packBuffer {
	var spares []*packBuffer
	for {
		select {
		case b := <-packBuffers:
			spares = append(spares, b)
		default:
			return spares
		}
	}
}
