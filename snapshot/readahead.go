package snapshot

import (
	"context"
	"sync"
)

// Read-ahead sizes: the first read-ahead of a sequential reader covers
// readAheadFirst bytes past its read, and each further sequential read
// doubles that, up to the reader's maximum. A reader that jumps starts over,
// so random reads (a file system's metadata) cost no reads ahead.
const (
	readAheadFirst   = 1 << 20
	readAheadMax     = 16 << 20
	readAheadWorkers = 4 // blocks of one disk read ahead at once
)

// readAhead reads blocks of a DiskReader into its cache before sequential
// readers ask for them, so that a stream of small reads (a FUSE file
// system's are 128 KiB) is not one repository round trip per block.
type readAhead struct {
	r   *DiskReader
	ctx context.Context // reads ahead run under it: they outlive the read that asked
	max int64
	// slots bounds the blocks read ahead at once.
	slots chan struct{}
	// running counts the reads ahead not yet finished, for wait.
	running sync.WaitGroup
}

// newReadAhead reads ahead of r's sequential readers, up to max bytes
// (readAheadMax if 0), under ctx. A negative max turns read-ahead off.
func newReadAhead(ctx context.Context, r *DiskReader, max int64) *readAhead {
	if max == 0 {
		max = readAheadMax
	}
	return &readAhead{r: r, ctx: ctx, max: max, slots: make(chan struct{}, readAheadWorkers)}
}

// readStream is one reader's view of where it reads: a FUSE file handle's.
type readStream struct {
	a *readAhead

	mu     sync.Mutex
	next   int64 // where the previous read ended
	ahead  int64 // bytes before this were read ahead already
	window int64 // how far the next read-ahead reaches past a read
}

func (a *readAhead) newStream() *readStream { return &readStream{a: a} }

// ReadAt reads p at off through the reader's cache, reading ahead first if
// the reads so far are sequential.
func (s *readStream) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	s.note(off, int64(len(p)))
	return s.a.r.ReadAtContext(ctx, p, off)
}

// note records a read of n bytes at off and starts reading ahead of it if
// it continues the previous one. The kernel has several reads of one
// stream in flight and they may arrive out of order, so "continues" allows
// the distance of one window.
func (s *readStream) note(off, n int64) {
	if s.a.max < 0 {
		return
	}
	s.mu.Lock()
	end := off + n
	slack := max(s.window, readAheadFirst)
	if off < s.next-slack || off > s.next+slack {
		s.window, s.ahead = 0, end // a jump: no read-ahead until it runs on
		s.next = end
		s.mu.Unlock()
		return
	}
	s.next = max(s.next, end)
	s.window = min(max(2*s.window, readAheadFirst), s.a.max)
	from, to := max(s.ahead, end), min(end+s.window, s.a.r.Size())
	if to > from {
		s.ahead = to
	}
	s.mu.Unlock()
	if to > from {
		s.a.fill(from, to)
	}
}

// fill reads the blocks of [from, to) into the cache in the background.
// Errors are left for the read that gets there to report.
func (a *readAhead) fill(from, to int64) {
	a.running.Add(1)
	go func() {
		defer a.running.Done()
		bs := int64(a.r.g.BlockSize)
		var blocks sync.WaitGroup
		for b := from / bs; b*bs < to; b++ {
			select {
			case a.slots <- struct{}{}:
			case <-a.ctx.Done():
				blocks.Wait()
				return
			}
			blocks.Add(1)
			go func() {
				defer func() { <-a.slots; blocks.Done() }()
				a.r.block(a.ctx, b) //nolint:errcheck // the read that needs it reports it
			}()
		}
		blocks.Wait()
	}()
}

// wait returns when the reads ahead started so far are done.
func (a *readAhead) wait() { a.running.Wait() }
