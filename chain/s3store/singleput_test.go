package s3store_test

import (
	"bytes"
	"context"
	"net/http"
	"testing"

	"github.com/diskpoint/diskpoint/chain/s3store"
)

// An object a little over the part size (as a repository's packs are: 16
// MiB of blobs and their header) goes in one PUT, not in a multipart
// upload of three requests in a row; one over twice the part size still
// goes in parts.
func TestPackSizedPutIsOnePut(t *testing.T) {
	counter := &countingTransport{base: http.DefaultTransport}
	s := newStore(t, func(o *s3store.Options) { o.Transport = counter })
	ctx := context.Background()
	data := bytes.Repeat([]byte("pack"), (s3store.DefaultPartSize+4096)/4)
	if err := s.Put(ctx, "packs/ab/pack", data); err != nil {
		t.Fatal(err)
	}
	if n, parts := counter.count("POST multipart"), counter.count("PUT part"); n != 0 || parts != 0 {
		t.Errorf("a Put of %d bytes made %d multipart requests and %d part uploads, want one PUT", len(data), n, parts)
	}
	if puts := counter.count("PUT"); puts != 1 {
		t.Errorf("a Put of %d bytes sent %d PUTs, want 1", len(data), puts)
	}
	got, err := s.Get(ctx, "packs/ab/pack")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get: %d bytes, %v; want the %d put", len(got), err, len(data))
	}

	big := make([]byte, 2*s3store.DefaultPartSize+1)
	if err := s.Put(ctx, "packs/ab/big", big); err != nil {
		t.Fatal(err)
	}
	if parts := counter.count("PUT part"); parts != 3 {
		t.Errorf("a Put of %d bytes uploaded %d parts, want 3", len(big), parts)
	}
}
