package nbd_test

import (
	"context"
	"encoding/binary"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/internal/nbdfake"
	"github.com/diskpoint/diskpoint/nbd"
)

// statusPayload is the block status of context id for the request at
// off of n bytes: extents along a grid of granule bytes, flags from
// flagsOf(granule number), at most most of them, as a server that answers
// part of a request does.
func statusPayload(id uint32, off, n, granule uint64, most int, flagsOf func(uint64) uint32) []byte {
	p := binary.BigEndian.AppendUint32(nil, id)
	for pos, k := off, 0; pos < off+n && k < most; k++ {
		next := min((pos/granule+1)*granule, off+n)
		p = binary.BigEndian.AppendUint32(p, uint32(next-pos))
		p = binary.BigEndian.AppendUint32(p, flagsOf(pos/granule))
		pos = next
	}
	return p
}

// Asking for two meta contexts at once gives what asking for each alone
// gives, in fewer requests, even when the server answers each context for
// a different length (here base:allocation 4 extents of 64 KiB a reply,
// the bitmap 2 of 96 KiB).
func TestBlockStatusOfSeveralContextsAtOnce(t *testing.T) {
	const size = 1 << 20
	bitmap := nbd.DirtyBitmap("b0")
	var requests atomic.Int32
	f := &nbdfake.Server{Size: size, Contexts: []string{nbd.BaseAllocation, bitmap}, Answer: func(c *nbdfake.Conn, r nbdfake.Request) {
		requests.Add(1)
		off, n := r.Offset, uint64(r.Length)
		c.Send(nbdfake.Chunk(0, 5, r.Handle, statusPayload(1, off, n, 64<<10, 4, func(k uint64) uint32 { return uint32(k%3) & 3 })),
			nbdfake.Chunk(1, 5, r.Handle, statusPayload(2, off, n, 96<<10, 2, func(k uint64) uint32 { return uint32(k % 2) })))
	}}
	uri := f.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := nbd.Dial(ctx, uri, nbd.ClientOptions{MetaContexts: []string{nbd.BaseAllocation, bitmap}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, span := range [][2]int64{{0, size}, {100 << 10, 500 << 10}} {
		off, length := span[0], span[1]
		requests.Store(0)
		alloc, err := c.BlockStatus(ctx, nbd.BaseAllocation, off, length)
		if err != nil {
			t.Fatal(err)
		}
		dirty, err := c.BlockStatus(ctx, bitmap, off, length)
		if err != nil {
			t.Fatal(err)
		}
		apart := requests.Swap(0)
		both, err := c.BlockStatusOf(ctx, []string{bitmap, nbd.BaseAllocation}, off, length)
		if err != nil {
			t.Fatal(err)
		}
		together := requests.Load()
		if !slices.Equal(both[nbd.BaseAllocation], alloc) || !slices.Equal(both[bitmap], dirty) {
			t.Fatalf("%d+%d: together\n%v\n%v\nwant, as asked apart,\n%v\n%v", off, length, both[nbd.BaseAllocation], both[bitmap], alloc, dirty)
		}
		for name, extents := range both {
			if pos := off; len(extents) == 0 || extents[0].Offset != off {
				t.Fatalf("%s: extents %v do not start at %d", name, extents, off)
			} else {
				for _, e := range extents {
					if e.Offset != pos {
						t.Fatalf("%s: extents %v leave a gap or overlap at %d", name, extents, pos)
					}
					pos += e.Length
				}
				if pos != off+length {
					t.Fatalf("%s: extents %v end at %d, want %d", name, extents, pos, off+length)
				}
			}
		}
		if together >= apart {
			t.Fatalf("%d+%d: %d requests together, %d apart; want fewer together", off, length, together, apart)
		}
		t.Logf("%d+%d: %d requests together, %d apart", off, length, together, apart)
	}
}
