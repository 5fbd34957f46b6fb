package chain_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"path"
	"strings"
	"syscall"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/chain/storetest"
)

// A failed read of a pack is the store's failure, named with the blob and
// the pack, and never ErrCorrupt; only bytes that were read and are wrong
// (or a pack shorter than the index says) are ErrCorrupt.
func TestReadErrorsAreNotCorruption(t *testing.T) {
	ctx := context.Background()
	mem := chain.NewMemStore()
	faulty := storetest.NewFaultStore(mem, 1)
	cfg, err := chain.NewTestConfig(0)
	if err != nil {
		t.Fatal(err)
	}
	cfg.TreeFanout, cfg.PackSize = 4, 1<<20
	repo, err := chain.Init(ctx, faulty, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids, data := randomBlocks(rand.New(rand.NewPCG(3, 3)), 40, 0)
	commit(t, repo, "p1", ids, data)
	victim := ids[7]
	loc, ok := repo.LocateBlob(victim)
	if !ok {
		t.Fatal("blob not indexed")
	}
	packID := path.Base(loc.Pack)

	for _, tc := range []struct {
		name    string
		damage  func(t *testing.T)
		wantErr error // what the error must wrap
	}{
		{"EIO", func(*testing.T) {
			faulty.Inject(storetest.Fault{Op: storetest.OpReadAt, Prefix: loc.Pack, Err: syscall.EIO})
		}, syscall.EIO},
		{"transient", func(*testing.T) {
			faulty.Inject(storetest.Fault{Op: storetest.OpReadAt, Prefix: loc.Pack, Err: errFlaky})
		}, chain.ErrTransient},
		{"pack missing", func(t *testing.T) {
			stored, _ := mem.Get(ctx, loc.Pack)
			mem.Delete(ctx, loc.Pack)
			t.Cleanup(func() { mem.Put(ctx, loc.Pack, stored) })
		}, chain.ErrNotFound},
		{"flipped byte", func(t *testing.T) {
			stored, _ := mem.Get(ctx, loc.Pack)
			bad := append([]byte(nil), stored...)
			bad[loc.Offset+loc.Length/2] ^= 0x20
			mem.Put(ctx, loc.Pack, bad)
			t.Cleanup(func() { mem.Put(ctx, loc.Pack, stored) })
		}, chain.ErrCorrupt},
		{"truncated pack", func(t *testing.T) {
			stored, _ := mem.Get(ctx, loc.Pack)
			mem.Put(ctx, loc.Pack, stored[:loc.Offset+1])
			t.Cleanup(func() { mem.Put(ctx, loc.Pack, stored) })
		}, chain.ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Cleanup(faulty.Clear)
			if _, err := repo.ReadBlob(ctx, chain.DataBlob, victim, nil); err != nil {
				t.Fatalf("before the damage: %v", err)
			}
			tc.damage(t)
			_, single := repo.ReadBlob(ctx, chain.DataBlob, victim, nil)
			many := repo.ReadBlobs(ctx, chain.DataBlob, ids, nil, func(int, []byte) error { return nil })
			for what, err := range map[string]error{"ReadBlob": single, "ReadBlobs": many} {
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("%s: %v, want it to wrap %v", what, err, tc.wantErr)
				}
				if corrupt := errors.Is(err, chain.ErrCorrupt); corrupt != (tc.wantErr == chain.ErrCorrupt) {
					t.Errorf("%s: %v: ErrCorrupt is %v, want %v", what, err, corrupt, !corrupt)
				}
				if err != nil && !strings.Contains(err.Error(), packID) {
					t.Errorf("%s: %v does not name pack %s", what, err, packID)
				}
			}
			if !strings.Contains(single.Error(), victim.String()) {
				t.Errorf("ReadBlob: %v does not name blob %s", single, victim)
			}
		})
	}
}
