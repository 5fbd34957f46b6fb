package snapshot_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/chain/storetest"
	"github.com/diskpoint/diskpoint/snapshot"
)

// A restore names the point and reads it from whichever tier holds it,
// local first: a point the local tier holds is read without a single read
// of the vault (which is not even opened when it is opened on demand), and
// a point the transfer pruned from the local tier comes from the vault.
func TestTieredRestoreReadsTheVaultOnlyForWhatTheLocalTierLacks(t *testing.T) {
	ctx := context.Background()
	f := newTieredFixture(t, 3)
	store, err := chain.NewLocalStore(f.vaultDir)
	if err != nil {
		t.Fatal(err)
	}
	counted := storetest.NewFaultStore(store, 0) // no faults: it counts the vault's reads
	vaultReads := func() int {
		return counted.Calls(storetest.OpGet) + counted.Calls(storetest.OpReadAt) +
			counted.Calls(storetest.OpStat) + counted.Calls(storetest.OpList)
	}
	vault, err := snapshot.OpenStore(ctx, counted, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snapshot.Transfer(ctx, f.local, vault, snapshot.TransferOptions{PruneLocal: true, KeepLocal: 1}); err != nil {
		t.Fatal(err)
	}
	oldest, newest := f.points[0].ID, f.points[2].ID

	restore := func(tiers *snapshot.Tiers, point, want string) snapshot.Tier {
		t.Helper()
		out := filepath.Join(t.TempDir(), "d.img")
		_, tier, err := tiers.RestoreDisk(ctx, "vm", snapshot.RestoreOptions{Point: point, Disk: "d", Path: out})
		if err != nil {
			t.Fatalf("tiered restore of %s: %v", point, err)
		}
		if !bytes.Equal(readFile(t, out), f.images[want]) {
			t.Fatalf("the tiered restore of %s from the %s tier restores something else", point, tier)
		}
		return tier
	}

	tiers := &snapshot.Tiers{Local: f.local, Vault: vault}
	before := vaultReads()
	if tier := restore(tiers, newest, newest); tier != snapshot.TierLocal || vaultReads() != before {
		t.Fatalf("the local point was restored from the %s tier with %d reads of the vault, want local and none", tier, vaultReads()-before)
	}
	if tier := restore(tiers, snapshot.Latest, newest); tier != snapshot.TierLocal || vaultReads() != before {
		t.Fatalf("latest was restored from the %s tier with %d reads of the vault, want local and none", tier, vaultReads()-before)
	}
	if tier := restore(tiers, oldest, oldest); tier != snapshot.TierVault || vaultReads() == before {
		t.Fatalf("the pruned point was restored from the %s tier with %d reads of the vault, want the vault", tier, vaultReads()-before)
	}
	if tier := restore(tiers, oldest[:len(oldest)-2], oldest); tier != snapshot.TierVault {
		t.Fatalf("a prefix of the pruned point was restored from the %s tier", tier)
	}

	// Opened on demand: a local restore never opens the vault, so it works
	// while the vault is unreachable.
	var opened int
	lazy := &snapshot.Tiers{Local: f.local, OpenVault: func(context.Context) (*snapshot.Repository, error) {
		opened++
		return nil, errors.New("the vault is unreachable")
	}}
	if tier := restore(lazy, newest, newest); tier != snapshot.TierLocal || opened != 0 {
		t.Fatalf("a local restore opened the vault %d times (tier %s)", opened, tier)
	}
	if _, _, err := lazy.RestoreDisk(ctx, "vm", snapshot.RestoreOptions{Point: oldest, Disk: "d", Path: filepath.Join(t.TempDir(), "x")}); err == nil || opened != 1 {
		t.Fatalf("a restore of a pruned point with the vault unreachable: %v, opened %d", err, opened)
	}
	missing := &snapshot.Tiers{Local: f.local, Vault: vault}
	if _, _, err := missing.RestoreDisk(ctx, "vm", snapshot.RestoreOptions{Point: "20000101-000000-nope", Disk: "d", Path: filepath.Join(t.TempDir(), "x")}); !errors.Is(err, snapshot.ErrNotFound) {
		t.Fatalf("a point in neither tier: %v, want ErrNotFound", err)
	}

	// Restores running at once open the vault once (run with -race).
	var opens atomic.Int32
	shared := &snapshot.Tiers{Local: f.local, OpenVault: func(context.Context) (*snapshot.Repository, error) {
		opens.Add(1)
		return vault, nil
	}}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, _, err := shared.Locate(ctx, "vm", oldest, "d"); err != nil {
				t.Errorf("locate the pruned point: %v", err)
			}
		}()
	}
	wg.Wait()
	if n := opens.Load(); n != 1 {
		t.Fatalf("four restores at once opened the vault %d times, want once", n)
	}
}
