package s3store_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/chain/internal/objstoretest"
	"github.com/diskpoint/diskpoint/chain/s3store"
	"github.com/diskpoint/diskpoint/chain/storetest"
	"github.com/diskpoint/diskpoint/internal/objserver"
)

func TestConformance(t *testing.T) {
	objserver.SharedMinIO(t) // skips here, once, when there is no server
	storetest.Run(t, func(t *testing.T) chain.Store { return newStore(t, nil) })
}

// The bucket's root, with no prefix, is a store too.
func TestConformanceWithoutPrefix(t *testing.T) {
	objserver.SharedMinIO(t)
	storetest.Run(t, func(t *testing.T) chain.Store {
		return newStore(t, func(o *s3store.Options) { o.Prefix = "" })
	})
}

// countingTransport counts the requests that pass, by a key made of the
// method and which S3 sub-resource the query names.
type countingTransport struct {
	base http.RoundTripper
	mu   sync.Mutex
	n    map[string]int
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	kind := req.Method
	q := req.URL.Query()
	switch {
	case q.Has("uploadId") && q.Has("partNumber"):
		kind += " part"
	case q.Has("uploads") || q.Has("uploadId"):
		kind += " multipart"
	case req.Method == http.MethodGet && q.Has("list-type"):
		kind += " list"
	}
	c.mu.Lock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[kind]++
	c.mu.Unlock()
	return c.base.RoundTrip(req)
}

func (c *countingTransport) count(kind string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[kind]
}

// A listing longer than a page is followed to its end: 1,100 objects with
// pages of 100 keys take 11 listing requests or more, and each name comes
// once.
func TestListManyPages(t *testing.T) {
	counter := &countingTransport{base: http.DefaultTransport}
	s := newStore(t, func(o *s3store.Options) { o.ListPageSize = 100; o.Transport = counter })
	objstoretest.ListManyPages(t, s, func() int64 { return int64(counter.count("GET list")) }, "objects")
}

// PutIfAbsent racing from separate clients (as from separate hosts) lets
// exactly one win, and the object holds the winner's bytes.
func TestPutIfAbsentRaceAcrossClients(t *testing.T) {
	srv := objserver.SharedMinIO(t)
	bucket := newBucket(t, srv)
	const clients = 8
	stores := make([]chain.Store, clients)
	for i := range stores {
		s, err := s3store.New(storeOptions(srv, bucket, "shared"))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		stores[i] = s
	}
	objstoretest.PutIfAbsentRace(t, stores)
}

// An object above the part size is uploaded in parts, and reads back whole
// and in ranges across the parts' seams.
func TestMultipartPut(t *testing.T) {
	counter := &countingTransport{base: http.DefaultTransport}
	s := newStore(t, func(o *s3store.Options) { o.PartSize = 5 << 20; o.Transport = counter })
	ctx := context.Background()
	data := make([]byte, 12<<20+12345)
	for i := range data {
		data[i] = byte(i*7 + i>>12)
	}
	if err := s.Put(ctx, "packs/ab/big", data); err != nil {
		t.Fatal(err)
	}
	if parts := counter.count("PUT part"); parts != 3 {
		t.Errorf("uploaded %d parts, want 3 of 5 MiB", parts)
	}
	got, err := s.Get(ctx, "packs/ab/big")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get: %d bytes, %v; want the %d put", len(got), err, len(data))
	}
	p := make([]byte, 1<<20)
	off := int64(5<<20 - 1000)
	if err := s.ReadAt(ctx, "packs/ab/big", p, off); err != nil || !bytes.Equal(p, data[off:off+int64(len(p))]) {
		t.Fatalf("ReadAt across a seam: %v", err)
	}
	if err := s.ReadAt(ctx, "packs/ab/big", p, int64(len(data))-10); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("ReadAt past the end: %v, want io.ErrUnexpectedEOF", err)
	}
}

// Uploads a crash left behind are aborted once old enough; younger ones,
// and those outside the store's prefix, are left alone.
func TestAbortIncompleteUploads(t *testing.T) {
	srv := objserver.SharedMinIO(t)
	bucket := newBucket(t, srv)
	s, err := s3store.New(storeOptions(srv, bucket, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	client, err := srv.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	core := minio.Core{Client: client}
	inside, err := core.NewMultipartUpload(ctx, bucket, "repo/packs/aa/crashed", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	outside, err := core.NewMultipartUpload(ctx, bucket, "other/packs/aa/crashed", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.AbortIncompleteUploads(ctx, time.Hour); err != nil || len(got) != 0 {
		t.Fatalf("with an hour's grace: aborted %v, %v; want none", got, err)
	}
	got, err := s.AbortIncompleteUploads(ctx, -time.Minute) // everything is old enough
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Name != "packs/aa/crashed" || got[0].UploadID != inside {
		t.Fatalf("aborted %+v, want only packs/aa/crashed (%s)", got, inside)
	}
	left, err := core.ListMultipartUploads(ctx, bucket, "", "", "", "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(left.Uploads) != 1 || left.Uploads[0].UploadID != outside {
		t.Fatalf("uploads left: %+v, want only the one outside the prefix (%s)", left.Uploads, outside)
	}
}

// The documented fallback for servers without conditional PUT still
// creates only, one client at a time.
func TestCreateOnlyCheckThenPut(t *testing.T) {
	s := newStore(t, func(o *s3store.Options) { o.CreateOnly = s3store.CreateOnlyCheckThenPut })
	ctx := context.Background()
	if err := s.PutIfAbsent(ctx, "config", []byte("first")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutIfAbsent(ctx, "config", []byte("second")); !errors.Is(err, chain.ErrExists) {
		t.Fatalf("second PutIfAbsent: %v, want ErrExists", err)
	}
	if got, _ := s.Get(ctx, "config"); string(got) != "first" {
		t.Fatalf("config = %q, want first", got)
	}
	if err := s.PutIfAbsent(ctx, "config/under", []byte("x")); !errors.Is(err, chain.ErrInvalidName) {
		t.Fatalf("PutIfAbsent under an object: %v, want ErrInvalidName", err)
	}
}

// A repository lives in the bucket: a restore point is created, restored
// bit-exact, and verifies clean, through snapshot's Store entry points.
func TestRepositoryOnMinIO(t *testing.T) {
	srv := objserver.SharedMinIO(t)
	storeOpts := storeOptions(srv, newBucket(t, srv), "vault")
	objstoretest.RepositoryRoundTrip(t, func(t *testing.T) chain.Store {
		s, err := s3store.New(storeOpts)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// slowDown is the answer of a throttling S3 server.
func slowDown(req *http.Request, retryAfter string) *http.Response {
	h := http.Header{"Content-Type": {"application/xml"}}
	if retryAfter != "" {
		h.Set("Retry-After", retryAfter)
	}
	body := `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`
	return &http.Response{StatusCode: http.StatusServiceUnavailable, Header: h, Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)), Request: req}
}

// A throttled request (503 SlowDown with Retry-After) is retried after the
// wait the server asked for (minio-go's own backoff would wait at most
// 200 ms before the first retry), and the call succeeds.
func TestThrottledRequestWaitsRetryAfter(t *testing.T) {
	var puts atomic.Int64
	s := newStore(t, func(o *s3store.Options) {
		o.Transport = objstoretest.RoundTripFunc(func(req *http.Request) (*http.Response, error) {
			if req.Method == http.MethodPut && puts.Add(1) == 1 {
				return slowDown(req, "1"), nil
			}
			return http.DefaultTransport.RoundTrip(req)
		})
	})
	start := time.Now()
	if err := s.PutIfAbsent(context.Background(), "config", []byte("x")); err != nil {
		t.Fatalf("PutIfAbsent after a SlowDown: %v", err)
	}
	if waited := time.Since(start); waited < time.Second {
		t.Fatalf("retried after %v, before the 1 s Retry-After", waited)
	}
	if got := puts.Load(); got != 2 {
		t.Fatalf("%d PUTs, want 2 (the throttled one and its retry)", got)
	}
}

// A PutIfAbsent whose answer is lost, so that minio-go sends it again and
// meets its own object (412), succeeds: the store reads the object back.
func TestPutIfAbsentLostAnswer(t *testing.T) {
	objstoretest.PutIfAbsentLostAnswer(t, func(t *testing.T, transport http.RoundTripper) chain.Store {
		return newStore(t, func(o *s3store.Options) { o.Transport = transport })
	})
}

// A failure that persists past the retries wraps ErrTransient and names
// the object.
func TestPersistentSlowDownIsTransient(t *testing.T) {
	s := newStore(t, func(o *s3store.Options) {
		o.MaxRetries = 2
		o.Transport = objstoretest.RoundTripFunc(func(req *http.Request) (*http.Response, error) { return slowDown(req, ""), nil })
	})
	if _, err := s.Get(context.Background(), "config"); !errors.Is(err, chain.ErrTransient) || !strings.Contains(err.Error(), "config") {
		t.Fatalf("Get from a throttling server: %v, want ErrTransient naming the object", err)
	}
}
