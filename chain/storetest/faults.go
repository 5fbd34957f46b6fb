package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"

	"github.com/diskpoint/diskpoint/chain"
)

// Op names a [chain.Store] method, for matching faults.
type Op string

// The Store's methods.
const (
	OpPut         Op = "put"
	OpPutIfAbsent Op = "put-if-absent"
	OpGet         Op = "get"
	OpReadAt      Op = "read-at"
	OpStat        Op = "stat"
	OpList        Op = "list"
	OpDelete      Op = "delete"
)

// Fault says which calls of a [FaultStore] go wrong, and how. A call is
// matched by its method and name; of the matching calls, the first Skip go
// through untouched, then Times are hit (all the rest when Times is 0).
//
// A hit call first sends on Entered, if it is set, so that a test knows
// the call is under way; then it waits for Wait to be closed, if Wait is
// set: a slow store, released by the test (or by the call's ctx, whose
// error it then returns). Then, with Err set, it fails with an error wrapping Err and
// naming the call; with After also set, the call is made first and its
// result thrown away (a write that happened but whose answer was lost).
type Fault struct {
	Op     Op     // the method; "" matches every method
	Prefix string // the object name (for List, the prefix listed) starts with this
	Skip   int    // matching calls let through before the first hit
	Times  int    // matching calls hit after those; 0 hits every one
	// Chance, between 0 and 1, hits a matching call with this probability
	// (drawn from the store's seeded source, so runs repeat); 0 hits all.
	// Calls it spares still count towards Skip and Times.
	Chance  float64
	Err     error
	After   bool
	Entered chan<- struct{}
	Wait    <-chan struct{}
}

type faultState struct {
	Fault
	matched, hits int
}

// FaultStore wraps a [chain.Store] and injects faults, for tests of what
// callers do when a store fails, stalls or lists stale results (a store of
// this kind, like kopia's blobtesting, keeps those tests deterministic: no
// sleeps, and a seeded source where a fault is random). It is safe for
// concurrent use; faults can be added and cleared while it is used.
type FaultStore struct {
	chain.Store

	mu     sync.Mutex
	rng    *rand.Rand
	faults []*faultState
	calls  map[Op]int

	// Stale listings: the names of the last staleK objects put, and what
	// the last staleK deleted objects were.
	staleK  int
	put     []string
	deleted []chain.ObjectInfo
}

var _ chain.Store = (*FaultStore)(nil)

// NewFaultStore wraps store; seed makes faults with a Chance repeatable.
func NewFaultStore(store chain.Store, seed uint64) *FaultStore {
	return &FaultStore{Store: store, rng: rand.New(rand.NewPCG(seed, seed)), calls: map[Op]int{}}
}

// Inject adds a fault. When several match a call, the first added that
// hits it applies.
func (f *FaultStore) Inject(fault Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = append(f.faults, &faultState{Fault: fault})
}

// Clear removes every fault and stops stale listings.
func (f *FaultStore) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults, f.staleK, f.put, f.deleted = nil, 0, nil, nil
}

// Calls returns how many calls of op the store has had, hit or not.
func (f *FaultStore) Calls(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// Hits returns how many calls faults have hit so far.
func (f *FaultStore) Hits() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, s := range f.faults {
		n += s.hits
	}
	return n
}

// StaleLists makes List lag behind writes, as an eventually consistent
// object store's listing may: it leaves out the objects written by the
// last k Puts and PutIfAbsents, and still reports the objects removed by
// the last k Deletes. Get, ReadAt and Stat stay current. k = 0 ends it.
func (f *FaultStore) StaleLists(k int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.staleK, f.put, f.deleted = k, nil, nil
}

// hit counts a call and returns the fault that hits it, if any.
func (f *FaultStore) hit(op Op, name string) *Fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	for _, s := range f.faults {
		if s.Op != "" && s.Op != op || !strings.HasPrefix(name, s.Prefix) {
			continue
		}
		s.matched++
		if s.matched <= s.Skip || s.Times > 0 && s.matched > s.Skip+s.Times {
			continue
		}
		if s.Chance > 0 && f.rng.Float64() >= s.Chance {
			continue
		}
		s.hits++
		return &s.Fault
	}
	return nil
}

// do runs call under the fault that hits it, if any.
func (f *FaultStore) do(ctx context.Context, op Op, name string, call func() error) error {
	fault := f.hit(op, name)
	if fault == nil {
		return call()
	}
	if fault.Entered != nil {
		select {
		case fault.Entered <- struct{}{}:
		case <-ctx.Done():
			return fmt.Errorf("%s %s: stalled by an injected fault: %w", op, name, ctx.Err())
		}
	}
	if fault.Wait != nil {
		select {
		case <-fault.Wait:
		case <-ctx.Done():
			return fmt.Errorf("%s %s: stalled by an injected fault: %w", op, name, ctx.Err())
		}
	}
	if fault.Err == nil {
		return call()
	}
	if fault.After {
		if err := call(); err != nil {
			return err
		}
	}
	return fmt.Errorf("%s %s: injected fault: %w", op, name, fault.Err)
}

// Put stores the object unless a fault says otherwise.
func (f *FaultStore) Put(ctx context.Context, name string, data []byte) error {
	return f.do(ctx, OpPut, name, func() error {
		err := f.Store.Put(ctx, name, data)
		if err == nil {
			f.notePut(name)
		}
		return err
	})
}

// PutIfAbsent creates the object unless a fault says otherwise.
func (f *FaultStore) PutIfAbsent(ctx context.Context, name string, data []byte) error {
	return f.do(ctx, OpPutIfAbsent, name, func() error {
		err := f.Store.PutIfAbsent(ctx, name, data)
		if err == nil {
			f.notePut(name)
		}
		return err
	})
}

// Get reads the object unless a fault says otherwise.
func (f *FaultStore) Get(ctx context.Context, name string) ([]byte, error) {
	var data []byte
	err := f.do(ctx, OpGet, name, func() (err error) {
		data, err = f.Store.Get(ctx, name)
		return err
	})
	if err != nil {
		return nil, err
	}
	return data, nil
}

// ReadAt reads part of the object unless a fault says otherwise.
func (f *FaultStore) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	return f.do(ctx, OpReadAt, name, func() error { return f.Store.ReadAt(ctx, name, p, off) })
}

// Stat describes the object unless a fault says otherwise.
func (f *FaultStore) Stat(ctx context.Context, name string) (chain.ObjectInfo, error) {
	var info chain.ObjectInfo
	err := f.do(ctx, OpStat, name, func() (err error) {
		info, err = f.Store.Stat(ctx, name)
		return err
	})
	if err != nil {
		return chain.ObjectInfo{}, err
	}
	return info, nil
}

// List lists the objects under prefix, as of a while ago if StaleLists
// says so, unless a fault says otherwise.
func (f *FaultStore) List(ctx context.Context, prefix string, fn func(chain.ObjectInfo) error) error {
	return f.do(ctx, OpList, prefix, func() error {
		f.mu.Lock()
		hidden := slices.Clone(f.put)
		ghosts := slices.Clone(f.deleted)
		f.mu.Unlock()
		err := f.Store.List(ctx, prefix, func(info chain.ObjectInfo) error {
			if slices.Contains(hidden, info.Name) {
				return nil
			}
			return fn(info)
		})
		if err != nil {
			return err
		}
		for _, info := range ghosts {
			if strings.HasPrefix(info.Name, prefix) {
				if err := fn(info); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// Delete removes the object unless a fault says otherwise.
func (f *FaultStore) Delete(ctx context.Context, name string) error {
	return f.do(ctx, OpDelete, name, func() error {
		var info chain.ObjectInfo
		if f.stale() {
			info, _ = f.Store.Stat(ctx, name) // what a stale listing will still show
		}
		if err := f.Store.Delete(ctx, name); err != nil {
			return err
		}
		if info.Name != "" {
			f.noteDelete(info)
		}
		return nil
	})
}

func (f *FaultStore) stale() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.staleK > 0
}

// notePut records a write for stale listings: the object is hidden, and no
// longer shown as deleted.
func (f *FaultStore) notePut(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.staleK == 0 {
		return
	}
	f.deleted = slices.DeleteFunc(f.deleted, func(i chain.ObjectInfo) bool { return i.Name == name })
	f.put = lastK(append(f.put, name), f.staleK)
}

// noteDelete records a deletion for stale listings: the object is shown
// still, and no longer hidden as new.
func (f *FaultStore) noteDelete(info chain.ObjectInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.staleK == 0 {
		return
	}
	f.put = slices.DeleteFunc(f.put, func(n string) bool { return n == info.Name })
	f.deleted = lastK(append(f.deleted, info), f.staleK)
}

func lastK[T any](s []T, k int) []T {
	if len(s) > k {
		return slices.Clone(s[len(s)-k:])
	}
	return s
}
