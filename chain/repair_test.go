package chain_test

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
)

// A repair that moves a damaged pack's sound blobs out leaves the old pack
// in place while a reader lives, since the reader may read them through the
// index it loaded before, and deletes it at once when none does.
func TestRepairDefersDroppingPacksReadersMayRead(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reader bool
	}{{"no reader", false}, {"reader", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			mem := chain.NewMemStore()
			repo := newRepoOn(t, mem)
			ids, data := randomBlocks(rand.New(rand.NewPCG(5, 5)), 40, 0)
			m := commit(t, repo, "p", ids, data)
			victim := ids[3]
			loc, ok := repo.LocateBlob(victim)
			if !ok {
				t.Fatal("blob not indexed")
			}
			stored, err := mem.Get(ctx, loc.Pack)
			if err != nil {
				t.Fatal(err)
			}
			stored[loc.Offset+loc.Length/2] ^= 0x40
			if err := mem.Put(ctx, loc.Pack, stored); err != nil {
				t.Fatal(err)
			}

			// The reader opened before the repair and reads through that index.
			reader, err := chain.Open(ctx, mem, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.reader {
				lock, err := reader.OpenReader(ctx, "restore", []chain.ID{m.Disks[0].Root})
				if err != nil {
					t.Fatal(err)
				}
				defer lock.Close()
			}
			n, err := repo.RepairBlobs(ctx, chain.DataBlob, map[chain.ID][]byte{victim: data[victim]})
			if err != nil || n != 1 {
				t.Fatalf("repair: %d, %v", n, err)
			}
			_, err = mem.Stat(ctx, loc.Pack)
			if kept := err == nil; kept != tc.reader {
				t.Fatalf("damaged pack kept after repair: %v, want %v (stat: %v)", kept, tc.reader, err)
			}
			var records int
			mem.List(ctx, "garbage/", func(chain.ObjectInfo) error { records++; return nil })
			if want := map[bool]int{false: 0, true: 1}[tc.reader]; records != want {
				t.Fatalf("%d garbage records, want %d", records, want)
			}
			if tc.reader {
				if err := readAll(t, reader, m); err != nil {
					t.Fatalf("reader after the repair: %v", err)
				}
			}
			if err := readAll(t, repo, m); err != nil {
				t.Fatalf("repaired point: %v", err)
			}
		})
	}
}
