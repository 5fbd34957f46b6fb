package chain_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
)

// concurrentReads is a store whose pack reads each wait (up to a bound)
// for a second read to be under way, and that records the most reads of
// packs in flight at once.
type concurrentReads struct {
	chain.Store
	mu       sync.Mutex
	inFlight int
	most     int
	second   chan struct{} // closed when two reads are in flight
	once     sync.Once
}

func (s *concurrentReads) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if !strings.HasPrefix(name, "packs/") {
		return s.Store.ReadAt(ctx, name, p, off)
	}
	s.mu.Lock()
	s.inFlight++
	s.most = max(s.most, s.inFlight)
	if s.inFlight == 2 {
		s.once.Do(func() { close(s.second) })
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}()
	// Reads made one after another never see a second: the bound keeps
	// the test from hanging on them.
	select {
	case <-s.second:
	case <-time.After(2 * time.Second):
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.Store.ReadAt(ctx, name, p, off)
}

// ReadBlobs reads the spans of blobs in different packs ahead, several at
// once, and no more than its bound: on an object store a read is a round
// trip, and one at a time leaves the link idle (issue 13's restore).
func TestReadBlobsReadsSpansInParallel(t *testing.T) {
	ctx := context.Background()
	store := &concurrentReads{Store: chain.NewMemStore(), second: make(chan struct{})}
	cfg, err := chain.NewTestConfig(0)
	if err != nil {
		t.Fatal(err)
	}
	cfg.TreeFanout, cfg.PackSize = 4, 1<<20
	repo, err := chain.Init(ctx, store, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Each commit writes its blocks in a pack of its own.
	rng := rand.New(rand.NewPCG(5, 5))
	var ids []chain.ID
	data := map[chain.ID][]byte{}
	for p := range 2 * chain.ReadAheadSpans {
		more, moreData := randomBlocks(rng, 8, 0)
		commit(t, repo, "p"+string(rune('a'+p)), more, moreData)
		ids = append(ids, more...)
		for id, b := range moreData {
			data[id] = b
		}
	}
	seen := 0
	err = repo.ReadBlobs(ctx, chain.DataBlob, ids, nil, func(i int, got []byte) error {
		if !bytes.Equal(got, data[ids[i]]) {
			t.Errorf("blob %d: wrong bytes", i)
		}
		seen++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != len(ids) {
		t.Errorf("%d blobs read, want %d", seen, len(ids))
	}
	if store.most < 2 || store.most > chain.ReadAheadSpans {
		t.Errorf("at most %d pack reads were in flight at once, want 2 to %d", store.most, chain.ReadAheadSpans)
	}
}

// A ReadBlobs that stops early (its callback fails) returns at once with
// the callback's error, its reads ahead cancelled and waited for.
func TestReadBlobsStopsItsReadAhead(t *testing.T) {
	ctx := context.Background()
	mem := chain.NewMemStore()
	cfg, err := chain.NewTestConfig(0)
	if err != nil {
		t.Fatal(err)
	}
	cfg.TreeFanout, cfg.PackSize = 4, 1<<20
	repo, err := chain.Init(ctx, mem, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(6, 6))
	var ids []chain.ID
	for p := range 4 {
		more, moreData := randomBlocks(rng, 8, 0)
		commit(t, repo, "p"+string(rune('a'+p)), more, moreData)
		ids = append(ids, more...)
	}
	stop := context.Canceled
	calls := 0
	err = repo.ReadBlobs(ctx, chain.DataBlob, ids, nil, func(int, []byte) error {
		calls++
		return stop
	})
	if err != stop || calls != 1 {
		t.Fatalf("ReadBlobs = %v after %d calls, want the callback's error after 1", err, calls)
	}
}
