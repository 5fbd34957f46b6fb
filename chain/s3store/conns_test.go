package s3store_test

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain/s3store"
	"github.com/diskpoint/diskpoint/internal/objserver"
)

// countingForwarder forwards TCP connections on 127.0.0.1 to target and
// counts them. Until gate connections have arrived (or a bound passed),
// it holds each one back: so that that many requests are in flight at once.
type countingForwarder struct {
	l        net.Listener
	accepted atomic.Int64
	gate     int64
	opened   chan struct{} // closed when gate connections arrived
	once     sync.Once
}

func startForwarder(t *testing.T, target string, gate int64) *countingForwarder {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &countingForwarder{l: l, gate: gate, opened: make(chan struct{})}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if f.accepted.Add(1) == f.gate {
				f.once.Do(func() { close(f.opened) })
			}
			go f.forward(c, target)
		}
	}()
	return f
}

func (f *countingForwarder) forward(c net.Conn, target string) {
	defer c.Close()
	select {
	case <-f.opened:
	case <-time.After(5 * time.Second): // requests that never overlap
	}
	up, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer up.Close()
	go func() { io.Copy(up, c); up.Close() }()
	io.Copy(c, up)
}

// Requests that run in parallel reuse their connections the next time:
// the transport the store makes keeps enough of them idle. With
// minio-go's default (16 idle per host), every round of 32 parallel reads
// dialled 16 connections anew.
func TestParallelReadsReuseConnections(t *testing.T) {
	const parallel = 32
	srv := objserver.SharedMinIO(t)
	fwd := startForwarder(t, srv.Endpoint, parallel)
	opts := storeOptions(srv, newBucket(t, srv), "repo/conns")
	opts.Region = "us-east-1" // no lookup before the first round
	ctx := context.Background()
	direct, err := s3store.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	if err := direct.Put(ctx, "object", make([]byte, 1<<10)); err != nil {
		t.Fatal(err)
	}
	opts.Endpoint = fwd.l.Addr().String()
	s, err := s3store.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	round := func() {
		var wg sync.WaitGroup
		for range parallel {
			wg.Go(func() {
				if err := s.ReadAt(ctx, "object", make([]byte, 100), 10); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	round() // opens the connections, at least `parallel` held at once
	before := fwd.accepted.Load()
	if before < parallel {
		t.Fatalf("%d connections after the first round, want at least %d", before, parallel)
	}
	round()
	round()
	if again := fwd.accepted.Load() - before; again != 0 {
		t.Errorf("two more rounds of %d parallel reads dialled %d new connections, want 0", parallel, again)
	}
}
