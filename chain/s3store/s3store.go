// Package s3store is a [chain.Store] in an S3 bucket (AWS S3, MinIO, Ceph
// RGW and the other S3 implementations), over github.com/minio/minio-go/v7.
//
// Each object of the store is one S3 object, named Prefix + "/" + name.
// What the Store contract asks for and how it is kept:
//
//   - PutIfAbsent is one conditional PUT with "If-None-Match: *": the
//     server refuses it with 412 Precondition Failed when the key exists,
//     atomically across clients. Where the server does not support it,
//     [CreateOnlyCheckThenPut] is the documented fallback (see there).
//   - Put uploads in one PUT up to twice Options.PartSize and in parts
//     above it, Options.PartUploads parts at a time; at most Options.MaxUploads Puts
//     run at once. Either way S3 shows the object only when it is whole.
//   - ReadAt is a ranged GET; List follows the listing's pages.
//   - Every HTTP request runs under the caller's ctx and its own timeout
//     (Options.RequestTimeout, plus time for its bytes at
//     Options.MinThroughput).
//   - Throttling and failures that may pass (HTTP 408, 429, 500, 502, 503,
//     504, SlowDown, connection errors, timeouts) are retried by minio-go
//     with exponential backoff and full jitter; this package adds what
//     minio-go lacks: it waits as long as a Retry-After header asks before
//     the retry. What fails after that wraps chain.ErrTransient, so that a
//     chain.RetryStore around the store can go on with longer waits.
//   - No object's name is a path prefix of another's: S3 keys have no
//     directories, so a Put checks (with HEAD of each leading part of the
//     name and a one-key listing under it) before it writes. The check and
//     the write are two steps: two clients writing "a" and "a/b" at the
//     same moment can both succeed. A repository never writes such names.
//
// Multipart uploads that a crash interrupted keep their parts (and cost
// storage) until they are aborted: [Store.AbortIncompleteUploads] does it,
// and chain's GC calls it (as AbortStaleUploads) for uploads older than
// its window.
package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/chain/internal/objhttp"
)

// CreateOnlyMode says how PutIfAbsent makes sure it only creates.
type CreateOnlyMode int

const (
	// CreateOnlyConditional (the default) sends a conditional PUT with
	// "If-None-Match: *". AWS S3 (since August 2024), MinIO, Ceph RGW
	// (Squid) and Cloudflare R2 support it. A server that answers it with
	// 501 Not Implemented makes PutIfAbsent fail with an error that names
	// this option; one that ignores the header silently cannot be told
	// apart and must not be used in this mode.
	CreateOnlyConditional CreateOnlyMode = iota
	// CreateOnlyCheckThenPut is the fallback for servers without
	// conditional PUT: a HEAD, and a plain PUT when the key is missing.
	// It is not atomic: two clients that create the same name at the same
	// moment can both succeed, the later object replacing the earlier.
	// Use it only where one client writes the repository at a time.
	CreateOnlyCheckThenPut
)

// Options configure a [Store]. Credentials are the caller's to find (the
// library reads no environment); zero fields take the defaults named.
type Options struct {
	// Endpoint is the server's host and port, without a scheme:
	// "s3.amazonaws.com", "127.0.0.1:9000".
	Endpoint string
	// Bucket must exist.
	Bucket string
	// Prefix, if set, is the "folder" in the bucket that holds the
	// repository: slash-separated, without a leading or trailing slash.
	Prefix string
	// AccessKeyID, SecretAccessKey and SessionToken (optional) are static
	// credentials. Credentials, if set, is used instead: any minio-go
	// provider or chain of providers.
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	Credentials     *credentials.Credentials
	// Region, if empty, is asked of the server.
	Region string
	// Insecure speaks plain HTTP. TLS is the default.
	Insecure bool
	// Transport carries the HTTP requests (nil: a default transport). The
	// store wraps it to add timeouts and Retry-After.
	Transport http.RoundTripper

	// RequestTimeout bounds each HTTP request that moves no data (default
	// 1 minute); a request that sends or receives bytes gets as much again
	// as they take at MinThroughput (default 1 MiB/s).
	RequestTimeout time.Duration
	MinThroughput  int64
	// MaxRetries is how many times minio-go tries a request in all
	// (default 10). MaxRetryAfter caps a wait a Retry-After header asks for
	// (default 30 s).
	MaxRetries    int
	MaxRetryAfter time.Duration

	// PartSize: objects larger than twice this are uploaded in parts of
	// this size (default 16 MiB, at least 5 MiB); smaller ones in one PUT. PartUploads parts of an object
	// are uploaded at once (default 4), and at most MaxUploads Puts run at
	// once (default 8).
	PartSize    uint64
	PartUploads int
	MaxUploads  int
	// ListPageSize is how many keys a listing request asks for (default
	// and S3's maximum 1000).
	ListPageSize int

	// CreateOnly chooses how PutIfAbsent creates (default conditional PUT).
	CreateOnly CreateOnlyMode
}

// Defaults of [Options].
const (
	DefaultRequestTimeout = time.Minute
	DefaultMinThroughput  = 1 << 20
	DefaultMaxRetryAfter  = 30 * time.Second
	DefaultPartSize       = 16 << 20
	DefaultPartUploads    = 4
	DefaultMaxUploads     = 8
	DefaultListPageSize   = 1000
	minPartSize           = 5 << 20 // S3's smallest part but the last
	minIdleConns          = 64      // idle connections kept at least
	maxSinglePut          = 5 << 30 // S3's largest object in one PUT
)

// Store is a [chain.Store] in an S3 bucket. It is safe for concurrent use.
type Store struct {
	client *minio.Client
	core   minio.Core
	bucket string
	prefix string // "" or ending in "/"
	opts   Options
	// uploads bounds the Puts in flight.
	uploads chan struct{}

	// regionKnown: the bucket's region was looked up (see knowRegion).
	regionKnown atomic.Bool

	closeOnce sync.Once
	transport *http.Transport // closed by Close when the store made it
}

var (
	_ chain.Store              = (*Store)(nil)
	_ chain.LinearizableLister = (*Store)(nil)
)

// New returns a store in the bucket opts names. It sends no request: a
// wrong endpoint, bucket or credential shows in the first operation.
func New(opts Options) (*Store, error) {
	if opts.Endpoint == "" || opts.Bucket == "" {
		return nil, errors.New("s3 store: endpoint and bucket are required")
	}
	prefix, err := objhttp.Prefix(opts.Prefix)
	if err != nil {
		return nil, fmt.Errorf("s3 store: %w", err)
	}
	objhttp.Default(&opts.RequestTimeout, DefaultRequestTimeout)
	objhttp.Default(&opts.MinThroughput, DefaultMinThroughput)
	objhttp.Default(&opts.MaxRetryAfter, DefaultMaxRetryAfter)
	if opts.PartSize == 0 {
		opts.PartSize = DefaultPartSize
	}
	opts.PartSize = max(opts.PartSize, minPartSize)
	objhttp.Default(&opts.PartUploads, DefaultPartUploads)
	objhttp.Default(&opts.MaxUploads, DefaultMaxUploads)
	if opts.ListPageSize <= 0 || opts.ListPageSize > DefaultListPageSize {
		opts.ListPageSize = DefaultListPageSize
	}
	creds := opts.Credentials
	if creds == nil {
		creds = credentials.NewStaticV4(opts.AccessKeyID, opts.SecretAccessKey, opts.SessionToken)
	}
	s := &Store{bucket: opts.Bucket, prefix: prefix, opts: opts, uploads: make(chan struct{}, opts.MaxUploads)}
	base := opts.Transport
	if base == nil {
		t, err := minio.DefaultTransport(!opts.Insecure)
		if err != nil {
			return nil, fmt.Errorf("s3 store: %w", err)
		}
		t.ResponseHeaderTimeout = opts.RequestTimeout
		// Keep a connection for every request that may run at once (the
		// parts of MaxUploads Puts, a restore's reads ahead): with fewer
		// idle ones kept (minio-go's default is 16, Go's 2), parallel
		// requests close and redial connections all the time.
		t.MaxIdleConnsPerHost = max(minIdleConns, opts.MaxUploads*opts.PartUploads)
		t.MaxIdleConns = max(t.MaxIdleConns, t.MaxIdleConnsPerHost)
		s.transport, base = t, t
	}
	client, err := minio.New(opts.Endpoint, &minio.Options{
		Creds:  creds,
		Secure: !opts.Insecure,
		Region: opts.Region,
		Transport: &objhttp.Transport{
			Base:           base,
			Timeout:        opts.RequestTimeout,
			MinThroughput:  opts.MinThroughput,
			HoldRetryAfter: true, // minio-go retries 429 and 503 but ignores Retry-After
			MaxRetryAfter:  opts.MaxRetryAfter,
		},
		MaxRetries: opts.MaxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 store %s/%s: %w", opts.Endpoint, opts.Bucket, err)
	}
	s.client, s.core = client, minio.Core{Client: client}
	return s, nil
}

// String names the store: "s3:ENDPOINT/BUCKET/PREFIX".
func (s *Store) String() string {
	return "s3:" + s.opts.Endpoint + "/" + s.bucket + "/" + strings.TrimSuffix(s.prefix, "/")
}

func (s *Store) key(name string) string { return s.prefix + name }

// Put stores data under name, replacing any object of that name.
func (s *Store) Put(ctx context.Context, name string, data []byte) error {
	return s.put(ctx, "put", name, data, false)
}

// PutIfAbsent stores data under name only if no object has that name,
// and returns an error wrapping chain.ErrExists otherwise. It is one
// conditional PUT of the whole object (not multipart: the objects created
// this way are small). When minio-go retried the PUT (the answer to an
// earlier attempt was lost) and the retry finds the key, the object is
// read back: holding exactly data, it is taken for this call's (as
// chain.RetryStore does).
func (s *Store) PutIfAbsent(ctx context.Context, name string, data []byte) error {
	return s.put(ctx, "put-if-absent", name, data, true)
}

func (s *Store) put(ctx context.Context, op, name string, data []byte, create bool) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s %s: %w", op, name, err)
	}
	if err := chain.CheckObjectName(name); err != nil {
		return err
	}
	if err := s.knowRegion(ctx, op, name); err != nil {
		return err
	}
	select {
	case s.uploads <- struct{}{}:
		defer func() { <-s.uploads }()
	case <-ctx.Done():
		return fmt.Errorf("%s %s: %w", op, name, ctx.Err())
	}
	if err := s.checkPathFree(ctx, op, name); err != nil {
		return err
	}
	if create && s.opts.CreateOnly == CreateOnlyCheckThenPut {
		if _, err := s.Stat(ctx, name); err == nil {
			return fmt.Errorf("%s %s: %w", op, name, chain.ErrExists)
		} else if !errors.Is(err, chain.ErrNotFound) {
			return err
		}
		create = false
	}
	popts := minio.PutObjectOptions{
		ContentType: "application/octet-stream",
		PartSize:    s.opts.PartSize,
		NumThreads:  uint(s.opts.PartUploads),
		// Up to twice the part size in one PUT: a pack just over the part
		// size (a repository's 16 MiB packs and their header) would take
		// an initiation, two parts (one of a few bytes) and a completion,
		// three round trips in a row where one PUT does.
		DisableMultipart: uint64(len(data)) <= min(2*s.opts.PartSize, maxSinglePut),
	}
	var attempts *objhttp.AttemptCounter
	if create {
		popts.SetMatchETagExcept("*")
		popts.DisableMultipart = true
		ctx, attempts = objhttp.WithAttemptCounter(ctx)
	}
	_, err := s.client.PutObject(ctx, s.bucket, s.key(name), bytes.NewReader(data), int64(len(data)), popts)
	if err == nil {
		return nil
	}
	err = s.wrap(ctx, op, name, err)
	if create && errors.Is(err, chain.ErrExists) && attempts.Attempts() > 1 {
		stored, gerr := s.Get(ctx, name)
		if gerr == nil && bytes.Equal(stored, data) {
			return nil
		}
	}
	return err
}

// checkPathFree enforces the rule that no object's name is a path prefix
// of another's: no leading part of name is an object, and no object lies
// under name + "/". The requests run at once.
func (s *Store) checkPathFree(ctx context.Context, op, name string) error {
	stat := func(ctx context.Context, name string) error {
		_, err := s.Stat(ctx, name)
		return err
	}
	return objhttp.CheckPathFree(ctx, op, name, stat, func(ctx context.Context, name string) (bool, error) {
		lctx, cancel := context.WithCancel(ctx)
		defer cancel()
		for obj := range s.client.ListObjects(lctx, s.bucket, minio.ListObjectsOptions{Prefix: s.key(name) + "/", Recursive: true, MaxKeys: 1}) {
			if obj.Err != nil {
				return false, s.wrap(ctx, "list", name+"/", obj.Err)
			}
			return true, nil
		}
		return false, nil
	})
}

// Get returns the whole object.
func (s *Store) Get(ctx context.Context, name string) ([]byte, error) {
	if err := chain.CheckObjectName(name); err != nil {
		return nil, err
	}
	if err := s.knowRegion(ctx, "get", name); err != nil {
		return nil, err
	}
	body, info, _, err := s.core.GetObject(ctx, s.bucket, s.key(name), minio.GetObjectOptions{})
	if err != nil {
		return nil, s.wrap(ctx, "get", name, err)
	}
	defer body.Close()
	buf := bytes.NewBuffer(make([]byte, 0, max(info.Size, 0)))
	if _, err := buf.ReadFrom(body); err != nil {
		return nil, s.wrap(ctx, "get", name, err)
	}
	if info.Size >= 0 && int64(buf.Len()) != info.Size {
		return nil, fmt.Errorf("get %s: %d of %d bytes arrived: %w", name, buf.Len(), info.Size, chain.ErrTransient)
	}
	return buf.Bytes(), nil
}

// ReadAt fills p with the object's bytes from off on, with one ranged GET.
func (s *Store) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if err := chain.CheckObjectName(name); err != nil {
		return err
	}
	if off < 0 {
		return fmt.Errorf("read %s at %d: negative offset", name, off)
	}
	if len(p) == 0 {
		info, err := s.Stat(ctx, name)
		if err != nil {
			return err
		}
		if off > info.Size {
			return fmt.Errorf("read %s: 0 bytes at %d: past the end (%d bytes): %w", name, off, info.Size, io.ErrUnexpectedEOF)
		}
		return nil
	}
	if err := s.knowRegion(ctx, "read", name); err != nil {
		return err
	}
	var gopts minio.GetObjectOptions
	if err := gopts.SetRange(off, off+int64(len(p))-1); err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	body, _, _, err := s.core.GetObject(ctx, s.bucket, s.key(name), gopts)
	if err != nil {
		err = s.wrap(ctx, "read", name, err)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("read %s: %d bytes at %d: past the end: %w", name, len(p), off, io.ErrUnexpectedEOF)
		}
		return err
	}
	defer body.Close()
	n, err := io.ReadFull(body, p)
	switch {
	case err == nil:
		return nil
	case (errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)) && ctx.Err() == nil:
		// The server sent the whole range it had: the object ends early.
		// A connection cut mid-body shows as another error.
		return fmt.Errorf("read %s: %d bytes at %d: only %d there: %w", name, len(p), off, n, io.ErrUnexpectedEOF)
	}
	return s.wrap(ctx, "read", name, err)
}

// Stat returns the object's size and its Last-Modified time.
func (s *Store) Stat(ctx context.Context, name string) (chain.ObjectInfo, error) {
	if err := chain.CheckObjectName(name); err != nil {
		return chain.ObjectInfo{}, err
	}
	if err := s.knowRegion(ctx, "stat", name); err != nil {
		return chain.ObjectInfo{}, err
	}
	info, err := s.client.StatObject(ctx, s.bucket, s.key(name), minio.StatObjectOptions{})
	if err != nil {
		return chain.ObjectInfo{}, s.wrap(ctx, "stat", name, err)
	}
	return chain.ObjectInfo{Name: name, Size: info.Size, ModTime: modTime(info.LastModified)}, nil
}

// List calls fn for every object whose name starts with prefix, a page of
// Options.ListPageSize keys at a time. Keys under the store's prefix that
// are no valid object name (written by something else) are skipped.
func (s *Store) List(ctx context.Context, prefix string, fn func(chain.ObjectInfo) error) error {
	if err := s.knowRegion(ctx, "list", prefix); err != nil {
		return err
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops minio-go's lister when fn stops early
	objects := s.client.ListObjects(lctx, s.bucket, minio.ListObjectsOptions{
		Prefix:    s.key(prefix),
		Recursive: true,
		MaxKeys:   s.opts.ListPageSize,
	})
	for obj := range objects {
		if obj.Err != nil {
			return s.wrap(ctx, "list", prefix, obj.Err)
		}
		name := strings.TrimPrefix(obj.Key, s.prefix)
		if chain.CheckObjectName(name) != nil {
			continue
		}
		if err := fn(chain.ObjectInfo{Name: name, Size: obj.Size, ModTime: modTime(obj.LastModified)}); err != nil {
			return err
		}
	}
	// minio-go closes the channel without an error when lctx is done.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("list %q: %w", prefix, err)
	}
	return nil
}

// Delete removes the object; a missing object is not an error.
func (s *Store) Delete(ctx context.Context, name string) error {
	if err := chain.CheckObjectName(name); err != nil {
		return err
	}
	if err := s.knowRegion(ctx, "delete", name); err != nil {
		return err
	}
	if err := s.client.RemoveObject(ctx, s.bucket, s.key(name), minio.RemoveObjectOptions{}); err != nil {
		err = s.wrap(ctx, "delete", name, err)
		if errors.Is(err, chain.ErrNotFound) {
			return nil
		}
		return err
	}
	return nil
}

// ListIsLinearizable is true: S3 lists an object once the PUT that
// created it has returned (strong list-after-write consistency, AWS S3
// since December 2020, and MinIO), so lock takers need not wait and look
// again ([chain.LinearizableLister]). A server whose listings lag behind
// its writes breaks the Store contract's read-after-write already.
func (s *Store) ListIsLinearizable() bool { return true }

// Close releases the idle connections of the transport the store made.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if s.transport != nil {
			s.transport.CloseIdleConnections()
		}
	})
	return nil
}

// modTime is t to the second, in UTC: a listing gives Last-Modified in
// milliseconds and a HEAD (an HTTP date) in seconds, and Stat and List
// must agree.
func modTime(t time.Time) time.Time { return t.Truncate(time.Second).UTC() }
