package objstoretest

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
)

// RoundTripFunc is an http.RoundTripper made of a function, to put in a
// store's Options.Transport.
type RoundTripFunc func(*http.Request) (*http.Response, error)

// RoundTrip calls f.
func (f RoundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// PutIfAbsentLostAnswer checks that a PutIfAbsent whose answer is lost, so
// that the client library sends it again and meets its own object,
// succeeds: the store reads the object back. newStore returns a store in
// a new place that sends its requests through transport.
func PutIfAbsentLostAnswer(t *testing.T, newStore func(t *testing.T, transport http.RoundTripper) chain.Store) {
	t.Helper()
	var puts atomic.Int64
	s := newStore(t, RoundTripFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err == nil && req.Method == http.MethodPut && puts.Add(1) == 1 {
			resp.Body.Close()
			return nil, errors.New("connection reset (injected after the server stored the object)")
		}
		return resp, err
	}))
	ctx := context.Background()
	if err := s.PutIfAbsent(ctx, "manifests/vm/p1", []byte("ours")); err != nil {
		t.Fatalf("PutIfAbsent with a lost answer: %v", err)
	}
	if puts.Load() < 2 {
		t.Fatalf("%d PUTs: the lost answer was not retried", puts.Load())
	}
	if err := s.PutIfAbsent(ctx, "manifests/vm/p1", []byte("ours")); !errors.Is(err, chain.ErrExists) {
		t.Fatalf("a second PutIfAbsent, answered at once: %v, want ErrExists", err)
	}
}
