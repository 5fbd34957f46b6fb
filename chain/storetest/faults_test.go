package storetest_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"syscall"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/chain/storetest"
)

func names(t *testing.T, s chain.Store, prefix string) string {
	t.Helper()
	var out []string
	if err := s.List(context.Background(), prefix, func(i chain.ObjectInfo) error { out = append(out, i.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return fmt.Sprint(out)
}

func TestFaultStoreNthCallAndPrefix(t *testing.T) {
	ctx := context.Background()
	f := storetest.NewFaultStore(chain.NewMemStore(), 1)
	// The 2nd and 3rd puts under packs/ fail; others pass.
	f.Inject(storetest.Fault{Op: storetest.OpPut, Prefix: "packs/", Skip: 1, Times: 2, Err: syscall.EIO})
	var got []bool
	for i := range 5 {
		err := f.Put(ctx, fmt.Sprintf("packs/p%d", i), []byte("x"))
		if err != nil && !errors.Is(err, syscall.EIO) {
			t.Fatalf("put %d: %v", i, err)
		}
		got = append(got, err == nil)
		if err := f.Put(ctx, fmt.Sprintf("index/i%d", i), []byte("x")); err != nil {
			t.Fatalf("a put outside the prefix was hit: %v", err)
		}
	}
	if fmt.Sprint(got) != "[true false false true true]" {
		t.Errorf("puts succeeded %v, want the 2nd and 3rd to fail", got)
	}
	if s := names(t, f, "packs/"); s != "[packs/p0 packs/p3 packs/p4]" {
		t.Errorf("stored %s: a failed put stored its object", s)
	}
	if f.Calls(storetest.OpPut) != 10 || f.Hits() != 2 {
		t.Errorf("calls %d, hits %d", f.Calls(storetest.OpPut), f.Hits())
	}
	// After: the call happens, then fails.
	f.Inject(storetest.Fault{Op: storetest.OpDelete, Err: syscall.EIO, After: true})
	if err := f.Delete(ctx, "packs/p0"); !errors.Is(err, syscall.EIO) {
		t.Errorf("Delete: %v", err)
	}
	if _, err := f.Stat(ctx, "packs/p0"); !errors.Is(err, chain.ErrNotFound) {
		t.Errorf("an After fault did not make the call: %v", err)
	}
}

func TestFaultStoreStallsUntilReleasedOrCancelled(t *testing.T) {
	ctx := context.Background()
	f := storetest.NewFaultStore(chain.NewMemStore(), 1)
	if err := f.Put(ctx, "p", []byte("data")); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	entered := make(chan struct{})
	f.Inject(storetest.Fault{Op: storetest.OpReadAt, Entered: entered, Wait: release})
	done := make(chan error)
	p := make([]byte, 4)
	go func() { done <- f.ReadAt(ctx, "p", p, 0) }()
	<-entered
	// The read is under way and stalled: what it reads is what the object
	// holds once it is released.
	if err := f.Store.Put(ctx, "p", []byte("new!")); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-done; err != nil || string(p) != "new!" {
		t.Fatalf("released ReadAt: %q, %v; want what the object held at the release", p, err)
	}
	// A stall that is never released ends with its context.
	f.Inject(storetest.Fault{Op: storetest.OpGet, Wait: make(chan struct{})})
	cctx, cancel := context.WithCancel(ctx)
	go func() { _, err := f.Get(cctx, "p"); done <- err }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("stalled Get after cancel: %v", err)
	}
}

func TestFaultStoreStaleLists(t *testing.T) {
	ctx := context.Background()
	f := storetest.NewFaultStore(chain.NewMemStore(), 1)
	for _, n := range []string{"a", "b", "c"} {
		if err := f.Put(ctx, "locks/"+n, []byte(n)); err != nil {
			t.Fatal(err)
		}
	}
	f.StaleLists(2)
	for _, n := range []string{"d", "e", "f"} {
		if err := f.Put(ctx, "locks/"+n, []byte(n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Delete(ctx, "locks/a"); err != nil {
		t.Fatal(err)
	}
	// The last two puts (e, f) are not listed yet; a is listed still.
	if s := names(t, f, "locks/"); s != "[locks/a locks/b locks/c locks/d]" {
		t.Errorf("stale listing %s", s)
	}
	if _, err := f.Get(ctx, "locks/f"); err != nil {
		t.Errorf("Get of an object a stale listing hides: %v", err)
	}
	f.StaleLists(0)
	if s := names(t, f, "locks/"); s != "[locks/b locks/c locks/d locks/e locks/f]" {
		t.Errorf("current listing %s", s)
	}
}

// Random faults repeat with the seed.
func TestFaultStoreChanceIsSeeded(t *testing.T) {
	run := func(seed uint64) string {
		f := storetest.NewFaultStore(chain.NewMemStore(), seed)
		f.Inject(storetest.Fault{Chance: 0.5, Err: syscall.EIO})
		var out []byte
		for range 40 {
			if _, err := f.Stat(context.Background(), "x"); errors.Is(err, syscall.EIO) {
				out = append(out, 'F')
			} else {
				out = append(out, '.')
			}
		}
		return string(out)
	}
	a, b, c := run(7), run(7), run(8)
	if a != b {
		t.Errorf("seed 7 gave %s, then %s", a, b)
	}
	if a == c {
		t.Errorf("seeds 7 and 8 gave the same faults %s", a)
	}
}
