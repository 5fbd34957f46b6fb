package objstoretest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/chain/internal/faultproxy"
	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

// ProxiedStore returns a new store, in a new bucket or container, that
// reaches the server through the fault proxy it returns. The tests call
// it after SkipShort, so a -short run starts no server.
type ProxiedStore func(t *testing.T) (chain.Store, *faultproxy.Proxy)

// SkipShort skips the fault tests under -short: they take minutes (every
// fault is met, retried and waited out); the -short run under the race
// detector leaves them to the full run.
func SkipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("the fault tests run without -short")
	}
}

// FaultsAreRetried checks that every operation survives a few requests
// that meet each fault: the request is retried and the operation
// succeeds, and what it wrote is there once.
func FaultsAreRetried(t *testing.T, newStore ProxiedStore) {
	SkipShort(t)
	for _, tc := range []struct {
		name  string
		fault faultproxy.Fault
	}{
		{"503 Retry-After", faultproxy.Fault{Kind: faultproxy.Status, Status: http.StatusServiceUnavailable, RetryAfter: "1"}},
		{"429 Retry-After", faultproxy.Fault{Kind: faultproxy.Status, Status: http.StatusTooManyRequests, RetryAfter: "1"}},
		{"500", faultproxy.Fault{Kind: faultproxy.Status, Status: http.StatusInternalServerError}},
		{"dropped connection", faultproxy.Fault{Kind: faultproxy.Drop}},
		{"stall", faultproxy.Fault{Kind: faultproxy.Stall}},
		{"lost answer", faultproxy.Fault{Kind: faultproxy.DropAfterForward}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, p := newStore(t)
			ctx := context.Background()
			data := bytes.Repeat([]byte("pack"), 1<<16)
			steps := []struct {
				op  string
				run func() error
			}{
				{"Put", func() error { return s.Put(ctx, "packs/aa/p1", data) }},
				{"PutIfAbsent", func() error { return s.PutIfAbsent(ctx, "manifests/vm1/r1", []byte("manifest")) }},
				{"Get", func() error {
					got, err := s.Get(ctx, "packs/aa/p1")
					if err == nil && !bytes.Equal(got, data) {
						return fmt.Errorf("got %d bytes, want %d", len(got), len(data))
					}
					return err
				}},
				{"ReadAt", func() error {
					b := make([]byte, 100)
					if err := s.ReadAt(ctx, "packs/aa/p1", b, 1000); err != nil {
						return err
					}
					if !bytes.Equal(b, data[1000:1100]) {
						return errors.New("wrong bytes")
					}
					return nil
				}},
				{"Stat", func() error { _, err := s.Stat(ctx, "manifests/vm1/r1"); return err }},
				{"List", func() error {
					n := 0
					err := s.List(ctx, "", func(chain.ObjectInfo) error { n++; return nil })
					if err == nil && n != 2 {
						return fmt.Errorf("listed %d objects, want 2", n)
					}
					return err
				}},
				{"Delete", func() error { return s.Delete(ctx, "packs/aa/p1") }},
			}
			for _, step := range steps {
				before := p.Faulted()
				p.Next(2, tc.fault)
				if err := step.run(); err != nil {
					t.Fatalf("%s after 2 requests met %s: %v", step.op, tc.name, err)
				}
				if p.Faulted()-before < 1 {
					t.Fatalf("%s: no request met the fault", step.op)
				}
				p.Always(faultproxy.Fault{}) // forget faults left unused
			}
		})
	}
}

// PersistentFaultFailsCleanly checks that a fault that does not pass
// fails the operation with an error wrapping ErrTransient, soon, and
// leaves no object behind. newStore's stores retry at most 3 times.
func PersistentFaultFailsCleanly(t *testing.T, newStore ProxiedStore) {
	SkipShort(t)
	s, p := newStore(t)
	ctx := context.Background()
	p.Always(faultproxy.Fault{Kind: faultproxy.Status, Status: http.StatusServiceUnavailable})
	start := time.Now()
	err := s.PutIfAbsent(ctx, "config", []byte("x"))
	if !errors.Is(err, chain.ErrTransient) {
		t.Fatalf("PutIfAbsent against a server that answers only 503: %v, want ErrTransient", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("gave up after %v", d)
	}
	p.Always(faultproxy.Fault{})
	if _, err := s.Stat(ctx, "config"); !errors.Is(err, chain.ErrNotFound) {
		t.Fatalf("after the failed PutIfAbsent: %v, want ErrNotFound", err)
	}
}

// RepositoryUnderFaults checks that a repository on the server survives
// faults: with a request in every few answered 500, creates succeed; when
// the server fails for good in the middle of a create, the create fails,
// no restore point shows, and once the fault is lifted the next create
// succeeds, everything restores bit-exact (through direct, a store on the
// same place that bypasses the proxy) and verify is clean, before and
// after GC. newStore's stores retry at most 3 times, each request within
// 10 s.
func RepositoryUnderFaults(t *testing.T, newStore ProxiedStore, direct func(t *testing.T) chain.Store) {
	SkipShort(t)
	s, p := newStore(t)
	ctx := context.Background()
	r := NewRepo(ctx, t, s, 16<<20, 3)

	// Every fifth request fails once.
	var n atomic.Int64
	p.Match(func(*http.Request) bool { return n.Add(1)%5 == 0 })
	p.Always(faultproxy.Fault{Kind: faultproxy.Status, Status: http.StatusInternalServerError})
	start := p.Requests()
	rp1, want1, err := r.Create(ctx, t)
	if err != nil {
		t.Fatalf("create with every fifth request failing: %v", err)
	}
	perCreate := p.Requests() - start
	if p.Faulted() == 0 {
		t.Fatal("no request met a fault")
	}

	// The server fails for good halfway through the next create.
	if _, err := demodisk.Scatter(r.Img, 0.05, 11); err != nil {
		t.Fatal(err)
	}
	n.Store(0)
	p.Match(func(*http.Request) bool { return n.Add(1) > perCreate/4 })
	p.Always(faultproxy.Fault{Kind: faultproxy.Status, Status: http.StatusServiceUnavailable})
	if _, _, err := r.Create(ctx, t); err == nil {
		t.Fatal("a create succeeded against a server that stopped answering")
	}

	// Lifted: the next create succeeds. The failed create could not
	// remove its collection lock (the server was down), and the lock names
	// this process, which lives on, so it is not stale: the operator's
	// unlock clears it, as it would after a crash seen from this host.
	p.Match(nil)
	p.Always(faultproxy.Fault{})
	if _, err := r.Repo.Unlock(ctx, true); err != nil {
		t.Fatal(err)
	}
	rp2, want2, err := r.Create(ctx, t)
	if err != nil {
		t.Fatalf("create after the fault was lifted: %v", err)
	}
	CheckPoints(ctx, t, r.VM, rp1.ID, rp2.ID)
	if err := r.Repo.Close(); err != nil {
		t.Fatal(err)
	}

	repo, vm := Reopen(ctx, t, direct(t))
	defer repo.Close()
	CheckRestores(ctx, t, vm, r.Dir, []Point{{rp1.ID, want1}, {rp2.ID, want2}})
	report, err := repo.Verify(ctx, snapshot.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !report.OK() {
		t.Fatalf("verify after the faults: %+v", report.Damage)
	}
	// What the failed create left is garbage that GC may sweep: after it,
	// both points still restore and verify is still clean.
	if _, err := repo.GC(ctx, snapshot.GCOptions{}); err != nil {
		t.Fatalf("GC after the faults: %v", err)
	}
	report, err = repo.Verify(ctx, snapshot.VerifyOptions{})
	if err != nil || !report.OK() || report.RestorePoints != 2 {
		t.Fatalf("verify after GC: %+v, %v", report, err)
	}
}
