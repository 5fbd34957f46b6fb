package chain

import (
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// A packBuffer is the memory a pack is assembled in before it is written.
//
// Its memory is mapped outside the Go heap. A create holds a few of them
// (the open data and tree packs and the ones being written: about 72 MiB),
// and as heap they would set the collector's goal: with GOGC=100 the heap
// may grow to twice what is live before a collection, so a long create
// would peak near 150 MiB where a short one stays near 80. Outside the
// heap they are a fixed cost and the heap is only what changes.
//
// Every buffer getPackBuffer hands out must be released exactly once,
// whatever fails: one never released leaks its mapping (the Go collector
// does not see it), one released twice would be handed to two packs.
type packBuffer struct {
	mem    []byte
	mapped bool // by mmap, so given back with munmap
	held   bool // handed out and not yet released
}

// packBuffersInUse counts the buffers handed out and not yet released.
var packBuffersInUse atomic.Int64

// packBuffers is a fixed free list, not a sync.Pool: a pool drops its
// buffers at each GC and the next pack maps afresh. A process keeps at most
// this many spare.
var packBuffers = make(chan *packBuffer, 2*maxPackWrites)

// getPackBuffer returns an empty buffer with room for a pack of packSize
// and the header and the blob that take it past that size.
func getPackBuffer(packSize int) *packBuffer {
	size := packSize + packSize/8
	packBuffersInUse.Add(1)
	select {
	case b := <-packBuffers:
		if len(b.mem) >= size {
			b.held = true
			return b
		}
		b.free()
	default:
	}
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil { // no mapping to be had: the heap will do
		return &packBuffer{mem: make([]byte, size), held: true}
	}
	return &packBuffer{mem: mem, mapped: true, held: true}
}

// release hands b back for the next pack, or frees it if there are enough
// spares. b must not be used after.
func (b *packBuffer) release() {
	if !b.held {
		panic("chain: pack buffer released twice") // two packs would share its memory
	}
	b.held = false
	packBuffersInUse.Add(-1)
	select {
	case packBuffers <- b:
	default:
		b.free()
	}
}

// dropPages gives the buffer's pages back to the kernel while keeping the
// mapping: its next pack starts on zero pages, faulted in as it fills.
// For a buffer its pack filled whole when the next packs, of blobs that
// compress to little, touch a sliver of it: a tree pack (16 MiB of
// incompressible node IDs, one per 500,000 blocks or so) left its pages
// resident in a spare that data packs of tiny blobs then used, and by
// 10M chunks every buffer in rotation had held one: 50-70 MiB of peak RSS
// that a 1M-chunk create did not have. Not done for every pack, since
// zeroing 16 MiB again costs a few ms per pack of incompressible data.
func (b *packBuffer) dropPages() {
	if b.mapped {
		unix.Madvise(b.mem, unix.MADV_DONTNEED) // only advice: if it fails, the pages stay
	}
}

func (b *packBuffer) free() {
	if b.mapped {
		unix.Munmap(b.mem)
	}
	b.mem = nil
}
