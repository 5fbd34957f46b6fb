package snapshot

import (
	"context"
	"fmt"

	"github.com/diskpoint/diskpoint/chain"
)

// Collection is the restore points of one VM, or of any named group of disks.
type Collection struct {
	repo *Repository
	name string
}

// RestorePoint is one point in time of a collection: its disks' block maps,
// the VM configuration stored with it, and the consistency achieved.
type RestorePoint struct {
	chain.Manifest
}

// Latest is the restore point ID that Get and RestoreDisk read as "the
// newest restore point of the collection".
const Latest = "latest"

// Name returns the collection's name.
func (c *Collection) Name() string { return c.name }

// List returns the collection's restore points, oldest first.
func (c *Collection) List(ctx context.Context) ([]*RestorePoint, error) {
	ms, err := c.repo.chain.ListManifests(ctx, c.name)
	if err != nil {
		return nil, err
	}
	out := make([]*RestorePoint, len(ms))
	for i, m := range ms {
		out[i] = &RestorePoint{*m}
	}
	return out, nil
}

// Get returns restore point id, or the newest one for Latest.
func (c *Collection) Get(ctx context.Context, id string) (*RestorePoint, error) {
	if id == Latest {
		points, err := c.List(ctx)
		if err != nil {
			return nil, err
		}
		if len(points) == 0 {
			return nil, fmt.Errorf("collection %q has no restore points: %w", c.name, ErrNotFound)
		}
		return points[len(points)-1], nil
	}
	m, err := c.repo.chain.LoadManifest(ctx, c.name, id)
	if err != nil {
		return nil, err
	}
	return &RestorePoint{*m}, nil
}

// Delete deletes restore point id and its hook log. Other restore points
// stay whole; the space only this one used is freed by the next GC.
func (c *Collection) Delete(ctx context.Context, id string) error {
	if err := c.repo.chain.DeleteManifest(ctx, c.name, id); err != nil {
		return err
	}
	if err := c.repo.chain.DeleteHookLog(ctx, c.name, id); err != nil {
		return fmt.Errorf("restore point %s/%s is deleted, but: %w", c.name, id, err)
	}
	return nil
}

// VMConfig returns the configuration blob stored with the restore point,
// or nil if none was.
func (c *Collection) VMConfig(ctx context.Context, rp *RestorePoint) ([]byte, error) {
	if rp.Config.IsZero() {
		return nil, nil
	}
	data, err := c.repo.chain.ReadBlob(ctx, chain.DataBlob, rp.Config, nil)
	if err != nil {
		return nil, fmt.Errorf("restore point %s/%s: VM config: %w", c.name, rp.ID, err)
	}
	return data, nil
}
