package s3store_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/chain/internal/faultproxy"
	"github.com/diskpoint/diskpoint/chain/internal/objstoretest"
	"github.com/diskpoint/diskpoint/chain/s3store"
	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/internal/objserver"
	"github.com/diskpoint/diskpoint/snapshot"
)

// proxiedStore returns a store that reaches MinIO through a fault proxy,
// and its options.
func proxiedStore(t *testing.T, mutate func(*s3store.Options)) (*s3store.Store, *faultproxy.Proxy, s3store.Options) {
	t.Helper()
	srv := objserver.SharedMinIO(t)
	p, err := faultproxy.New(srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	opts := storeOptions(srv, newBucket(t, srv), "repo")
	opts.Endpoint = p.Addr()
	opts.RequestTimeout = time.Second // a stall is found in a second
	if mutate != nil {
		mutate(&opts)
	}
	s, err := s3store.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, p, opts
}

// Every operation survives a few requests that meet each fault: the
// request is retried and the operation succeeds, and what it wrote is
// there once.
func TestFaultsAreRetried(t *testing.T) {
	objstoretest.FaultsAreRetried(t, func(t *testing.T) (chain.Store, *faultproxy.Proxy) {
		s, p, _ := proxiedStore(t, nil)
		return s, p
	})
}

// A fault that does not pass fails the operation with an error wrapping
// ErrTransient, soon, and leaves no object behind.
func TestPersistentFaultFailsCleanly(t *testing.T) {
	objstoretest.PersistentFaultFailsCleanly(t, func(t *testing.T) (chain.Store, *faultproxy.Proxy) {
		s, p, _ := proxiedStore(t, func(o *s3store.Options) { o.MaxRetries = 3 })
		return s, p
	})
}

// A repository on MinIO survives faults (see
// objstoretest.RepositoryUnderFaults); it is read back past the proxy.
func TestRepositoryUnderFaults(t *testing.T) {
	var opts s3store.Options
	objstoretest.RepositoryUnderFaults(t, func(t *testing.T) (chain.Store, *faultproxy.Proxy) {
		s, p, o := proxiedStore(t, func(o *s3store.Options) { o.MaxRetries = 3; o.RequestTimeout = 10 * time.Second })
		opts = o
		return s, p
	}, func(t *testing.T) chain.Store {
		direct := opts
		direct.Endpoint = objserver.SharedMinIO(t).Endpoint
		s2, err := s3store.New(direct)
		if err != nil {
			t.Fatal(err)
		}
		return s2
	})
}

// MinIO killed (SIGKILL) in the middle of a create and started again on
// the same data: the create fails cleanly, no restore point of it shows,
// the next create succeeds, everything restores bit-exact and verify is
// clean.
func TestMinIOKilledDuringCreate(t *testing.T) {
	objstoretest.SkipShort(t)
	own := objserver.StartMinIO(t) // its own, to kill
	bucket := newBucket(t, own)
	var sent, killAt atomic.Int64
	opts := storeOptions(own, bucket, "repo")
	opts.MaxRetries = 3
	opts.Transport = objstoretest.RoundTripFunc(func(req *http.Request) (*http.Response, error) {
		if k := killAt.Load(); k > 0 && sent.Add(1) == k {
			own.Kill()
		}
		return http.DefaultTransport.RoundTrip(req)
	})
	s, err := s3store.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r := objstoretest.NewRepo(ctx, t, s, 16<<20, 5)
	rp1, want1, err := r.Create(ctx, t)
	if err != nil {
		t.Fatal(err)
	}

	// The next create takes a few dozen requests; MinIO dies at the tenth.
	if _, err := demodisk.Scatter(r.Img, 0.05, 13); err != nil {
		t.Fatal(err)
	}
	killAt.Store(10)
	if _, _, err := r.Create(ctx, t); err == nil {
		t.Fatal("a create succeeded while MinIO was down")
	}
	killAt.Store(0)
	if err := own.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	// The failed create could not remove its lock while MinIO was down.
	if _, err := r.Repo.Unlock(ctx, true); err != nil {
		t.Fatal(err)
	}
	rp3, want3, err := r.Create(ctx, t)
	if err != nil {
		t.Fatalf("create after MinIO came back: %v", err)
	}
	objstoretest.CheckPoints(ctx, t, r.VM, rp1.ID, rp3.ID)
	objstoretest.CheckRestores(ctx, t, r.VM, r.Dir, []objstoretest.Point{{ID: rp1.ID, Want: want1}, {ID: rp3.ID, Want: want3}})
	report, err := r.Repo.Verify(ctx, snapshot.VerifyOptions{})
	if err != nil || !report.OK() || report.RestorePoints != 2 {
		t.Fatalf("verify after the crash: %+v, %v", report, err)
	}
	if err := r.Repo.Close(); err != nil {
		t.Fatal(err)
	}
}
