package objstoretest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
)

// PutIfAbsentRace checks that PutIfAbsent racing from separate clients
// (stores on the same place, as from separate hosts) lets exactly one win,
// and the object holds the winner's bytes.
func PutIfAbsentRace(t *testing.T, stores []chain.Store) {
	t.Helper()
	ctx := context.Background()
	for round := range 5 {
		name := fmt.Sprintf("locks/exclusive-%d", round)
		errs := make([]error, len(stores))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, s := range stores {
			wg.Go(func() {
				<-start
				errs[i] = s.PutIfAbsent(ctx, name, []byte(fmt.Sprintf("client %d", i)))
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("round %d: both client %d and client %d created %s", round, winner, i, name)
			case err == nil:
				winner = i
			case !errors.Is(err, chain.ErrExists):
				t.Fatalf("round %d: client %d: %v, want ErrExists", round, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: nobody created %s", round, name)
		}
		got, err := stores[0].Get(ctx, name)
		if err != nil || string(got) != fmt.Sprintf("client %d", winner) {
			t.Fatalf("round %d: %s holds %q (%v), want client %d's", round, name, got, err, winner)
		}
	}
}

// ListManyPages checks that a listing longer than a page is followed to
// its end: 1,100 objects with pages of 100 (s must list 100 a page) take
// 11 listing requests or more, as listRequests counts them, and each name
// comes once. noun names the objects in messages ("objects", "blobs").
func ListManyPages(t *testing.T, s chain.Store, listRequests func() int64, noun string) {
	t.Helper()
	ctx := context.Background()
	const n = 1100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := s.Put(ctx, fmt.Sprintf("index/%04d", i), []byte{byte(i)}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	before := listRequests()
	seen := map[string]bool{}
	err := s.List(ctx, "index/", func(info chain.ObjectInfo) error {
		if seen[info.Name] {
			return fmt.Errorf("%s listed twice", info.Name)
		}
		seen[info.Name] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != n {
		t.Fatalf("listed %d %s, want %d", len(seen), noun, n)
	}
	if pages := listRequests() - before; pages < n/100 {
		t.Fatalf("the listing took %d requests, want at least %d pages of 100", pages, n/100)
	}
}
