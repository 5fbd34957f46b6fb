package chain

import (
	"context"
	"sync"

	"golang.org/x/sync/semaphore"
)

// A read of many blobs reads the spans after the one being decoded while
// it decodes: on an object store each span is a request whose round trip
// would otherwise leave the reader idle, and a few at once fill the link.
// The bounds keep the memory of one read small.
const (
	readAheadSpans = 6        // span reads of one call in flight or waiting to be used
	readAheadBytes = 24 << 20 // and their bytes (a bigger span still goes, alone)
)

// spanReads reads the spans of one ReadBlobs call ahead of their use.
type spanReads struct {
	cancel  context.CancelFunc
	results []chan spanResult
	count   *semaphore.Weighted
	bytes   *semaphore.Weighted
	wg      sync.WaitGroup

	held bool   // the caller holds a span's buffer
	buf  []byte // that buffer
	free chan []byte
}

type spanResult struct {
	data  []byte
	err   error
	holds bool // of the bounds: a read was made
}

// readAhead starts reading spans 0 to n-1, span(k) naming the object,
// offset and length of each, in order, a bounded number ahead of the
// caller's wait.
func readAhead(ctx context.Context, store Store, n int, span func(k int) (name string, off, length int64)) *spanReads {
	ctx, cancel := context.WithCancel(ctx)
	s := &spanReads{
		cancel:  cancel,
		results: make([]chan spanResult, n),
		count:   semaphore.NewWeighted(readAheadSpans),
		bytes:   semaphore.NewWeighted(readAheadBytes),
		free:    make(chan []byte, readAheadSpans+1),
	}
	for k := range s.results {
		s.results[k] = make(chan spanResult, 1)
	}
	s.wg.Go(func() {
		for k := range n {
			name, off, length := span(k)
			// A failed Acquire (ctx is done) hands the caller an error
			// that holds nothing.
			if err := s.count.Acquire(ctx, 1); err != nil {
				s.results[k] <- spanResult{err: err}
				return
			}
			if err := s.bytes.Acquire(ctx, weight(length)); err != nil {
				s.count.Release(1)
				s.results[k] <- spanResult{err: err}
				return
			}
			buf := s.buffer(length)
			s.wg.Go(func() {
				err := store.ReadAt(ctx, name, buf, off)
				s.results[k] <- spanResult{buf, err, true}
			})
		}
	})
	return s
}

// weight is what a span of n bytes takes of readAheadBytes: a span larger
// than the bound takes all of it.
func weight(n int64) int64 { return min(n, readAheadBytes) }

// buffer returns n bytes, reusing a released buffer when one is big enough.
func (s *spanReads) buffer(n int64) []byte {
	select {
	case b := <-s.free:
		if int64(cap(b)) >= n {
			return b[:n]
		}
	default:
	}
	return make([]byte, n)
}

// wait returns span k's bytes or the error reading them. The bytes are
// the caller's until its next wait or stop; spans must be waited for in
// order.
func (s *spanReads) wait(k int) ([]byte, error) {
	s.release()
	r := <-s.results[k]
	s.held, s.buf = r.holds, r.data
	if r.err != nil {
		return nil, r.err
	}
	return r.data, nil
}

// release lets the read ahead go one span further, the held span's buffer
// free for reuse.
func (s *spanReads) release() {
	if !s.held {
		return
	}
	s.held = false
	s.count.Release(1)
	s.bytes.Release(weight(int64(len(s.buf))))
	select {
	case s.free <- s.buf:
	default:
	}
	s.buf = nil
}

// stop cancels the reads not waited for and waits for them to end.
func (s *spanReads) stop() {
	s.cancel()
	s.wg.Wait()
}
