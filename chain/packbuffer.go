package chain

import "golang.org/x/sys/unix"

// A packBuffer is the memory a pack is assembled in before it is written.
//
// Its memory is mapped outside the Go heap. A create holds a few of them
// (the open data and tree packs and the ones being written: about 72 MiB),
// and as heap they would set the collector's goal: with GOGC=100 the heap
// may grow to twice what is live before a collection, so a long create
// would peak near 150 MiB where a short one stays near 80. Outside the
// heap they are a fixed cost and the heap is only what changes.
type packBuffer struct {
	mem    []byte
	mapped bool // by mmap, so given back with munmap
}

// packBuffers is a fixed free list, not a sync.Pool: a pool drops its
// buffers at each GC and the next pack maps afresh. A process keeps at most
// this many spare.
var packBuffers = make(chan *packBuffer, 2*maxPackWrites)

// getPackBuffer returns an empty buffer with room for a pack of packSize
// and the header and the blob that take it past that size.
func getPackBuffer(packSize int) *packBuffer {
	size := packSize + packSize/8
	select {
	case b := <-packBuffers:
		if len(b.mem) >= size {
			return b
		}
		b.free()
	default:
	}
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil { // no mapping to be had: the heap will do
		return &packBuffer{mem: make([]byte, size)}
	}
	return &packBuffer{mem: mem, mapped: true}
}

// release hands b back for the next pack, or frees it if there are enough
// spares. b must not be used after.
func (b *packBuffer) release() {
	select {
	case packBuffers <- b:
	default:
		b.free()
	}
}

func (b *packBuffer) free() {
	if b.mapped {
		unix.Munmap(b.mem)
	}
	b.mem = nil
}
