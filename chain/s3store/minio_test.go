package s3store_test

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"

	"github.com/diskpoint/diskpoint/chain/s3store"
	"github.com/diskpoint/diskpoint/internal/objserver"
)

// The tests run against a real MinIO that they start on 127.0.0.1, once
// for the package (objserver.SharedMinIO), with its data in a temporary
// directory; each test works in a bucket of its own.

func TestMain(m *testing.M) {
	code := m.Run()
	objserver.StopShared()
	os.Exit(code)
}

var bucketSeq atomic.Int64

// newBucket makes a new, empty bucket on the server and returns its name.
func newBucket(t *testing.T, srv *objserver.MinIO) string {
	t.Helper()
	name := fmt.Sprintf("test-%d-%d", os.Getpid(), bucketSeq.Add(1))
	srv.MakeBucket(t, name)
	return name
}

// storeOptions are the options of a store in bucket under prefix on srv.
func storeOptions(srv *objserver.MinIO, bucket, prefix string) s3store.Options {
	return s3store.Options{
		Endpoint:        srv.Endpoint,
		Bucket:          bucket,
		Prefix:          prefix,
		AccessKeyID:     srv.AccessKey,
		SecretAccessKey: srv.SecretKey,
		Insecure:        true,
	}
}

// newStore returns a store in a new bucket, closed at the test's end.
func newStore(t *testing.T, mutate func(*s3store.Options)) *s3store.Store {
	t.Helper()
	srv := objserver.SharedMinIO(t)
	opts := storeOptions(srv, newBucket(t, srv), "repo/one")
	if mutate != nil {
		mutate(&opts)
	}
	s, err := s3store.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
