// Package azurestore is a [chain.Store] in an Azure Blob Storage container,
// over github.com/Azure/azure-sdk-for-go/sdk/storage/azblob.
//
// Each object of the store is one block blob, named Prefix + "/" + name.
// What the Store contract asks for and how it is kept:
//
//   - PutIfAbsent is an upload with "If-None-Match: *": the service refuses
//     it when the blob exists, atomically across clients.
//   - Put uploads in one request up to azblob's single-upload limit (256
//     MiB) and in staged blocks above it (Options.BlockSize each,
//     Options.BlockUploads at once); at most Options.MaxUploads Puts run at
//     once. A blob shows only when it is whole.
//   - ReadAt is a ranged download; List follows the listing's pages.
//   - Every HTTP request runs under the caller's ctx and its own timeout
//     (Options.RequestTimeout, plus time for its bytes at
//     Options.MinThroughput).
//   - Throttling and failures that may pass (HTTP 408, 429, 500, 502, 503,
//     504, connection errors, timeouts) are retried by azblob's pipeline,
//     configured here: exponential backoff with jitter, and the wait a
//     Retry-After header asks for. What fails after that wraps
//     chain.ErrTransient, so that a chain.RetryStore can go on.
//   - No object's name is a path prefix of another's: blob names have no
//     directories, so a Put checks (with a properties request for each
//     leading part of the name and a one-blob listing under it) before it
//     writes. The check and the write are two steps: two clients writing
//     "a" and "a/b" at the same moment can both succeed. A repository
//     never writes such names.
package azurestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/chain/internal/objhttp"
)

// Options configure a [Store]. Credentials are the caller's to find (the
// library reads no environment); zero fields take the defaults named.
type Options struct {
	// Container must exist.
	Container string
	// Prefix, if set, is the "folder" in the container that holds the
	// repository: slash-separated, without a leading or trailing slash.
	Prefix string

	// One way to reach and sign in to the account:
	//   - ConnectionString ("DefaultEndpointsProtocol=...;AccountName=...;
	//     AccountKey=...;BlobEndpoint=..."), as the portal and Azurite give;
	//   - AccountName and AccountKey (a shared key), with ServiceURL or
	//     else https://ACCOUNT.blob.core.windows.net/;
	//   - Credential (Microsoft Entra ID), with ServiceURL or AccountName.
	ConnectionString string
	ServiceURL       string
	AccountName      string
	AccountKey       string
	Credential       azcore.TokenCredential
	// Insecure allows a plain-HTTP endpoint (an emulator). TLS is the
	// default, and an http:// endpoint is refused without it.
	Insecure bool
	// Transport carries the HTTP requests (nil: a default transport). The
	// store wraps it to add timeouts.
	Transport http.RoundTripper

	// RequestTimeout bounds each HTTP request that moves no data (default
	// 1 minute); a request that sends or receives bytes gets as much again
	// as they take at MinThroughput (default 1 MiB/s).
	RequestTimeout time.Duration
	MinThroughput  int64
	// MaxRetries is how many times a request is retried after the first
	// try (default 6). RetryDelay is the first wait (default 800 ms); it
	// grows exponentially, with jitter, up to MaxRetryDelay (default 60 s).
	// A Retry-After header longer than MaxRetryDelay ends the retries.
	MaxRetries    int
	RetryDelay    time.Duration
	MaxRetryDelay time.Duration

	// BlockSize is the size of the staged blocks of objects above 256 MiB
	// (default 8 MiB); BlockUploads blocks of an object are uploaded at
	// once (default 4), and at most MaxUploads Puts run at once (default 8).
	BlockSize    int64
	BlockUploads int
	MaxUploads   int
	// ListPageSize is how many blobs a listing request asks for (default
	// and the service's maximum 5000).
	ListPageSize int
}

// Defaults of [Options].
const (
	DefaultRequestTimeout = time.Minute
	DefaultMinThroughput  = 1 << 20
	DefaultMaxRetries     = 6
	DefaultRetryDelay     = 800 * time.Millisecond
	DefaultMaxRetryDelay  = 60 * time.Second
	DefaultBlockSize      = 8 << 20
	DefaultBlockUploads   = 4
	DefaultMaxUploads     = 8
	DefaultListPageSize   = 5000
)

// Store is a [chain.Store] in an Azure Blob container. It is safe for
// concurrent use.
type Store struct {
	container *container.Client
	prefix    string // "" or ending in "/"
	opts      Options
	uploads   chan struct{}

	closeOnce sync.Once
	transport *http.Transport // closed by Close when the store made it
}

var (
	_ chain.Store              = (*Store)(nil)
	_ chain.LinearizableLister = (*Store)(nil)
)

// New returns a store in the container opts names. It sends no request: a
// wrong endpoint, container or credential shows in the first operation.
func New(opts Options) (*Store, error) {
	if opts.Container == "" {
		return nil, errors.New("azure store: a container is required")
	}
	prefix, err := objhttp.Prefix(opts.Prefix)
	if err != nil {
		return nil, fmt.Errorf("azure store: %w", err)
	}
	objhttp.Default(&opts.RequestTimeout, DefaultRequestTimeout)
	objhttp.Default(&opts.MinThroughput, DefaultMinThroughput)
	objhttp.Default(&opts.MaxRetries, DefaultMaxRetries)
	objhttp.Default(&opts.RetryDelay, DefaultRetryDelay)
	objhttp.Default(&opts.MaxRetryDelay, DefaultMaxRetryDelay)
	objhttp.Default(&opts.BlockSize, DefaultBlockSize)
	objhttp.Default(&opts.BlockUploads, DefaultBlockUploads)
	objhttp.Default(&opts.MaxUploads, DefaultMaxUploads)
	if opts.ListPageSize <= 0 || opts.ListPageSize > DefaultListPageSize {
		opts.ListPageSize = DefaultListPageSize
	}
	s := &Store{prefix: prefix, opts: opts, uploads: make(chan struct{}, opts.MaxUploads)}
	base := opts.Transport
	if base == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.ResponseHeaderTimeout = opts.RequestTimeout
		t.MaxIdleConnsPerHost = 64
		s.transport, base = t, t
	}
	clientOpts := &container.ClientOptions{ClientOptions: policy.ClientOptions{
		Transport: &http.Client{Transport: &objhttp.Transport{
			Base:          base,
			Timeout:       opts.RequestTimeout,
			MinThroughput: opts.MinThroughput,
			// azblob's retry policy honours Retry-After itself.
		}},
		Retry: policy.RetryOptions{
			MaxRetries:    int32(opts.MaxRetries),
			RetryDelay:    opts.RetryDelay,
			MaxRetryDelay: opts.MaxRetryDelay,
		},
		Telemetry: policy.TelemetryOptions{Disabled: true},
	}}
	client, err := newContainerClient(opts, clientOpts)
	if err != nil {
		return nil, fmt.Errorf("azure store %s: %w", opts.Container, err)
	}
	if u, err := url.Parse(client.URL()); err != nil {
		return nil, fmt.Errorf("azure store %s: %w", opts.Container, err)
	} else if u.Scheme != "https" && !opts.Insecure {
		return nil, fmt.Errorf("azure store %s: endpoint %s is not HTTPS (set Insecure for an emulator)", opts.Container, u.Redacted())
	}
	s.container = client
	return s, nil
}

// newContainerClient makes the client for the credentials opts gives.
func newContainerClient(opts Options, clientOpts *container.ClientOptions) (*container.Client, error) {
	serviceURL := opts.ServiceURL
	if serviceURL == "" && opts.AccountName != "" {
		serviceURL = "https://" + opts.AccountName + ".blob.core.windows.net/"
	}
	containerURL := strings.TrimSuffix(serviceURL, "/") + "/" + url.PathEscape(opts.Container)
	switch {
	case opts.ConnectionString != "":
		return container.NewClientFromConnectionString(opts.ConnectionString, opts.Container, clientOpts)
	case opts.Credential != nil && serviceURL != "":
		return container.NewClient(containerURL, opts.Credential, clientOpts)
	case opts.AccountName != "" && opts.AccountKey != "":
		cred, err := container.NewSharedKeyCredential(opts.AccountName, opts.AccountKey)
		if err != nil {
			return nil, err
		}
		return container.NewClientWithSharedKeyCredential(containerURL, cred, clientOpts)
	}
	return nil, errors.New("no credentials: give a connection string, an account name and key, or a token credential with the account or service URL")
}

// String names the store: "azure:CONTAINER:/PREFIX".
func (s *Store) String() string {
	return "azure:" + s.opts.Container + ":/" + strings.TrimSuffix(s.prefix, "/")
}

func (s *Store) blob(name string) *blockblob.Client {
	return s.container.NewBlockBlobClient(s.prefix + name)
}

// Put stores data under name, replacing any object of that name.
func (s *Store) Put(ctx context.Context, name string, data []byte) error {
	return s.put(ctx, "put", name, data, false)
}

// PutIfAbsent stores data under name only if no object has that name, and
// returns an error wrapping chain.ErrExists otherwise. When the pipeline
// retried the upload (the answer to an earlier try was lost) and the retry
// finds the blob, the blob is read back: holding exactly data, it is taken
// for this call's (as chain.RetryStore does).
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
	select {
	case s.uploads <- struct{}{}:
		defer func() { <-s.uploads }()
	case <-ctx.Done():
		return fmt.Errorf("%s %s: %w", op, name, ctx.Err())
	}
	if err := s.checkPathFree(ctx, op, name); err != nil {
		return err
	}
	uopts := &blockblob.UploadBufferOptions{
		BlockSize:   s.opts.BlockSize,
		Concurrency: uint16(s.opts.BlockUploads),
	}
	var attempts *objhttp.AttemptCounter
	if create {
		any := azcore.ETagAny
		uopts.AccessConditions = &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: &any}}
		ctx, attempts = objhttp.WithAttemptCounter(ctx)
	}
	if _, err := s.blob(name).UploadBuffer(ctx, data, uopts); err != nil {
		err = s.wrap(ctx, op, name, err)
		if create && errors.Is(err, chain.ErrExists) && attempts.Attempts() > 1 {
			if stored, gerr := s.Get(ctx, name); gerr == nil && bytes.Equal(stored, data) {
				return nil
			}
		}
		return err
	}
	return nil
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
		under := s.prefix + name + "/"
		one := int32(1)
		page, err := s.container.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: &under, MaxResults: &one}).NextPage(ctx)
		if err != nil {
			return false, s.wrap(ctx, "list", name+"/", err)
		}
		return page.Segment != nil && len(page.Segment.BlobItems) > 0, nil
	})
}

// Get returns the whole object.
func (s *Store) Get(ctx context.Context, name string) ([]byte, error) {
	if err := chain.CheckObjectName(name); err != nil {
		return nil, err
	}
	resp, err := s.blob(name).DownloadStream(ctx, nil)
	if err != nil {
		return nil, s.wrap(ctx, "get", name, err)
	}
	defer resp.Body.Close()
	size := int64(-1)
	if resp.ContentLength != nil {
		size = *resp.ContentLength
	}
	buf := bytes.NewBuffer(make([]byte, 0, max(size, 0)))
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return nil, s.wrap(ctx, "get", name, err)
	}
	if size >= 0 && int64(buf.Len()) != size {
		return nil, fmt.Errorf("get %s: %d of %d bytes arrived: %w", name, buf.Len(), size, chain.ErrTransient)
	}
	return buf.Bytes(), nil
}

// ReadAt fills p with the object's bytes from off on, with one ranged
// download.
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
	resp, err := s.blob(name).DownloadStream(ctx, &blob.DownloadStreamOptions{Range: blob.HTTPRange{Offset: off, Count: int64(len(p))}})
	if err != nil {
		err = s.wrap(ctx, "read", name, err)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("read %s: %d bytes at %d: past the end: %w", name, len(p), off, io.ErrUnexpectedEOF)
		}
		return err
	}
	defer resp.Body.Close()
	n, err := io.ReadFull(resp.Body, p)
	switch {
	case err == nil:
		return nil
	case (errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)) && ctx.Err() == nil:
		// The service sent the whole range it had: the object ends early.
		return fmt.Errorf("read %s: %d bytes at %d: only %d there: %w", name, len(p), off, n, io.ErrUnexpectedEOF)
	}
	return s.wrap(ctx, "read", name, err)
}

// Stat returns the object's size and its Last-Modified time.
func (s *Store) Stat(ctx context.Context, name string) (chain.ObjectInfo, error) {
	if err := chain.CheckObjectName(name); err != nil {
		return chain.ObjectInfo{}, err
	}
	props, err := s.blob(name).GetProperties(ctx, nil)
	if err != nil {
		return chain.ObjectInfo{}, s.wrap(ctx, "stat", name, err)
	}
	info := chain.ObjectInfo{Name: name}
	if props.ContentLength != nil {
		info.Size = *props.ContentLength
	}
	if props.LastModified != nil {
		info.ModTime = modTime(*props.LastModified)
	}
	return info, nil
}

// List calls fn for every object whose name starts with prefix, a page of
// Options.ListPageSize blobs at a time. Blobs under the store's prefix
// whose names are no valid object name (written by something else) are
// skipped.
func (s *Store) List(ctx context.Context, prefix string, fn func(chain.ObjectInfo) error) error {
	full := s.prefix + prefix
	size := int32(s.opts.ListPageSize)
	pager := s.container.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: &full, MaxResults: &size})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return s.wrap(ctx, "list", prefix, err)
		}
		if page.Segment == nil {
			continue
		}
		for _, item := range page.Segment.BlobItems {
			if item.Name == nil {
				continue
			}
			name := strings.TrimPrefix(*item.Name, s.prefix)
			if chain.CheckObjectName(name) != nil {
				continue
			}
			info := chain.ObjectInfo{Name: name}
			if item.Properties != nil {
				if item.Properties.ContentLength != nil {
					info.Size = *item.Properties.ContentLength
				}
				if item.Properties.LastModified != nil {
					info.ModTime = modTime(*item.Properties.LastModified)
				}
			}
			if err := fn(info); err != nil {
				return err
			}
		}
	}
	return nil
}

// Delete removes the object; a missing object is not an error.
func (s *Store) Delete(ctx context.Context, name string) error {
	if err := chain.CheckObjectName(name); err != nil {
		return err
	}
	if _, err := s.blob(name).Delete(ctx, nil); err != nil {
		err = s.wrap(ctx, "delete", name, err)
		if errors.Is(err, chain.ErrNotFound) {
			return nil
		}
		return err
	}
	return nil
}

// ListIsLinearizable is true: Blob Storage is strongly consistent, and a
// listing shows a blob once the upload that created it has returned, so
// lock takers need not wait and look again ([chain.LinearizableLister]).
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
