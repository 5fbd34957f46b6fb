package azurestore_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/chain/azurestore"
	"github.com/diskpoint/diskpoint/chain/internal/objstoretest"
	"github.com/diskpoint/diskpoint/chain/storetest"
	"github.com/diskpoint/diskpoint/internal/objserver"
)

func TestConformance(t *testing.T) {
	objserver.SharedAzurite(t) // skips here, once, when there is no server
	storetest.Run(t, func(t *testing.T) chain.Store { return newStore(t, nil) })
}

// The container's root, with no prefix, is a store too.
func TestConformanceWithoutPrefix(t *testing.T) {
	objserver.SharedAzurite(t)
	storetest.Run(t, func(t *testing.T) chain.Store {
		return newStore(t, func(o *azurestore.Options) { o.Prefix = "" })
	})
}

// A listing longer than a page is followed to its end: 1,100 blobs with
// pages of 100 take 11 listing requests or more, and each name comes once.
func TestListManyPages(t *testing.T) {
	var lists atomic.Int64
	s := newStore(t, func(o *azurestore.Options) {
		o.ListPageSize = 100
		o.Transport = objstoretest.RoundTripFunc(func(req *http.Request) (*http.Response, error) {
			if req.Method == http.MethodGet && req.URL.Query().Get("comp") == "list" {
				lists.Add(1)
			}
			return http.DefaultTransport.RoundTrip(req)
		})
	})
	objstoretest.ListManyPages(t, s, lists.Load, "blobs")
}

// PutIfAbsent racing from separate clients (as from separate hosts) lets
// exactly one win, and the blob holds the winner's bytes.
func TestPutIfAbsentRaceAcrossClients(t *testing.T) {
	srv := objserver.SharedAzurite(t)
	name := newContainer(t, srv)
	const clients = 8
	stores := make([]chain.Store, clients)
	for i := range stores {
		s, err := azurestore.New(storeOptions(srv, name, "shared"))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		stores[i] = s
	}
	objstoretest.PutIfAbsentRace(t, stores)
}

// A throttled request (429 with Retry-After) is retried by the pipeline
// after the wait the service asked for, and the call succeeds.
func TestThrottledRequestWaitsRetryAfter(t *testing.T) {
	var throttled atomic.Int64
	s := newStore(t, func(o *azurestore.Options) {
		o.RetryDelay = time.Millisecond // the backoff alone would not wait a second
		o.Transport = objstoretest.RoundTripFunc(func(req *http.Request) (*http.Response, error) {
			if req.Method == http.MethodPut && throttled.Add(1) == 1 {
				return &http.Response{
					StatusCode: http.StatusTooManyRequests,
					Header:     http.Header{"Retry-After": {"1"}, "X-Ms-Error-Code": {"ServerBusy"}},
					Body:       io.NopCloser(strings.NewReader("")),
					Request:    req,
				}, nil
			}
			return http.DefaultTransport.RoundTrip(req)
		})
	})
	start := time.Now()
	if err := s.PutIfAbsent(context.Background(), "config", []byte("x")); err != nil {
		t.Fatalf("PutIfAbsent after a 429: %v", err)
	}
	if waited := time.Since(start); waited < time.Second {
		t.Fatalf("retried after %v, before the 1 s Retry-After", waited)
	}
	if got := throttled.Load(); got != 2 {
		t.Fatalf("%d PUTs, want 2 (the throttled one and its retry)", got)
	}
}

// A failure that persists past the retries wraps ErrTransient.
func TestPersistentUnavailableIsTransient(t *testing.T) {
	s := newStore(t, func(o *azurestore.Options) {
		o.MaxRetries = 2
		o.RetryDelay = time.Millisecond
		o.Transport = objstoretest.RoundTripFunc(func(req *http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: http.StatusServiceUnavailable, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("")), Request: req}, nil
		})
	})
	if _, err := s.Get(context.Background(), "config"); !errors.Is(err, chain.ErrTransient) || !strings.Contains(err.Error(), "config") {
		t.Fatalf("Get from an unavailable service: %v, want ErrTransient naming the object", err)
	}
}

// TLS is the default: a plain-HTTP endpoint needs Insecure.
func TestPlainHTTPNeedsInsecure(t *testing.T) {
	opts := azurestore.Options{
		ConnectionString: objserver.AzuriteConnectionString("127.0.0.1:1"),
		Container:        "c",
	}
	if _, err := azurestore.New(opts); err == nil {
		t.Fatal("New accepted an http:// endpoint without Insecure")
	}
	opts.Insecure = true
	if _, err := azurestore.New(opts); err != nil {
		t.Fatalf("with Insecure: %v", err)
	}
}

// A repository lives in the container: restore points are created,
// restored bit-exact from a new client, and verify clean, through
// snapshot's Store entry points.
func TestRepositoryOnAzurite(t *testing.T) {
	srv := objserver.SharedAzurite(t)
	storeOpts := storeOptions(srv, newContainer(t, srv), "vault")
	objstoretest.RepositoryRoundTrip(t, func(t *testing.T) chain.Store {
		s, err := azurestore.New(storeOpts)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// A PutIfAbsent whose answer is lost, so that the pipeline sends it again
// and meets its own blob, succeeds: the store reads the blob back.
func TestPutIfAbsentLostAnswer(t *testing.T) {
	objstoretest.PutIfAbsentLostAnswer(t, func(t *testing.T, transport http.RoundTripper) chain.Store {
		return newStore(t, func(o *azurestore.Options) { o.Transport = transport })
	})
}
