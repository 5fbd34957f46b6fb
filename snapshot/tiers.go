package snapshot

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Tier names where a restore point was found: the local snapshot tier or
// the vault.
type Tier string

// The two tiers.
const (
	TierLocal Tier = "local"
	TierVault Tier = "vault"
)

// Tiers are Azure Backup's two tiers of restore points: a fast local
// snapshot tier, where restore points are taken, and a vault that
// Transfer copies them to. A restore names the point and reads it from
// whichever tier holds it, local first ("instant restore"): a point the
// local tier holds is read from it alone, and the vault is not read at
// all.
type Tiers struct {
	Local *Repository
	// Vault is the vault; if nil, OpenVault opens it when a point is not
	// in the local tier, so that restores from the local tier work while
	// the vault is unreachable. One of the two is needed for the vault.
	Vault     *Repository
	OpenVault func(ctx context.Context) (*Repository, error)

	opening sync.Mutex // restores running at once open the vault once
}

// Locate returns the collection, in the first tier that holds it, of the
// restore point ref names (an ID, a unique prefix, or Latest: the newest
// that has disk, where disk is not ""), and the point. Each tier resolves
// ref on its own, local first: Latest is the local tier's newest point
// while it has one. A point found in neither tier is an error wrapping
// ErrNotFound.
func (t *Tiers) Locate(ctx context.Context, collection, ref, disk string) (*Collection, *RestorePoint, Tier, error) {
	c, err := t.Local.Collection(collection)
	if err != nil {
		return nil, nil, "", err
	}
	rp, err := c.GetWithDisk(ctx, ref, disk)
	if err == nil {
		return c, rp, TierLocal, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return nil, nil, "", err
	}
	return t.locateInVault(ctx, collection, ref, disk)
}

// locateInVault is Locate in the vault alone.
func (t *Tiers) locateInVault(ctx context.Context, collection, ref, disk string) (*Collection, *RestorePoint, Tier, error) {
	vault, err := t.vault(ctx)
	if err != nil {
		return nil, nil, "", err
	}
	c, err := vault.Collection(collection)
	if err != nil {
		return nil, nil, "", err
	}
	rp, err := c.GetWithDisk(ctx, ref, disk)
	if err != nil {
		return nil, nil, "", fmt.Errorf("neither the local tier nor the vault: %w", err)
	}
	return c, rp, TierVault, nil
}

// vault returns the vault, opening it on first use if need be.
func (t *Tiers) vault(ctx context.Context) (*Repository, error) {
	t.opening.Lock()
	defer t.opening.Unlock()
	if t.Vault != nil {
		return t.Vault, nil
	}
	if t.OpenVault == nil {
		return nil, errors.New("tiers: no vault (Tiers.Vault and Tiers.OpenVault are nil)")
	}
	v, err := t.OpenVault(ctx)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	t.Vault = v
	return v, nil
}

// RestoreDisk is Collection.RestoreDisk from whichever tier holds
// opts.Point, local first (see Locate), and says which tier it read. A
// point the local tier lets go of while the restore opens it (a transfer
// pruned it) is read from the vault. With opts.From, both points must be
// in the tier that holds opts.Point.
func (t *Tiers) RestoreDisk(ctx context.Context, collection string, opts RestoreOptions) (RestoreStats, Tier, error) {
	c, rp, tier, err := t.Locate(ctx, collection, opts.Point, opts.Disk)
	if err != nil {
		return RestoreStats{}, "", err
	}
	opts.Point = rp.ID // resolved once: Latest or a prefix must not mean another point in the other tier
	stats, err := c.RestoreDisk(ctx, opts)
	if err != nil && tier == TierLocal && errors.Is(err, ErrNotFound) && deletedMeanwhile(ctx, c, rp.ID) {
		if c, _, tier, err = t.locateInVault(ctx, collection, rp.ID, opts.Disk); err != nil {
			return RestoreStats{}, "", err
		}
		stats, err = c.RestoreDisk(ctx, opts)
	}
	return stats, tier, err
}
