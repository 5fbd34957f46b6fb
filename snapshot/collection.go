package snapshot

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/diskpoint/diskpoint/chain"
)

// Collection is the restore points of one VM, or of any named group of disks.
type Collection struct {
	repo *Repository
	name string
}

// Latest is the restore point reference that Get, RestoreDisk, OpenDisk,
// Diff and Copy read as "the newest restore point of the collection" (that
// has the disk, where one is named).
const Latest = "latest"

// ErrAmbiguous: a prefix names more than one restore point.
var ErrAmbiguous = errors.New("ambiguous restore point ID prefix")

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
		out[i] = pointFromManifest(m)
	}
	return out, nil
}

// Get returns the restore point ref names: its ID, a prefix of exactly
// one ID (an error wrapping ErrAmbiguous lists the candidates), or Latest
// for the newest.
func (c *Collection) Get(ctx context.Context, ref string) (*RestorePoint, error) {
	return c.GetWithDisk(ctx, ref, "")
}

// GetWithDisk is Get where Latest means the newest restore point that has
// disk: a point that excluded the disk is passed over. An empty disk means
// any restore point.
func (c *Collection) GetWithDisk(ctx context.Context, ref, disk string) (*RestorePoint, error) {
	if ref == Latest {
		newest, err := c.newestWithDisks(ctx, []string{disk}, false)
		if err != nil {
			return nil, err
		}
		if rp := newest[disk]; rp != nil {
			return rp, nil
		}
		if disk != "" {
			return nil, fmt.Errorf("collection %q has no restore point of disk %q: %w", c.name, disk, ErrNotFound)
		}
		return nil, fmt.Errorf("collection %q has no restore points: %w", c.name, ErrNotFound)
	}
	m, err := c.repo.chain.LoadManifest(ctx, c.name, ref)
	if err == nil {
		return pointFromManifest(m), nil
	}
	if !errors.Is(err, ErrNotFound) || ref == "" {
		return nil, err
	}
	// Not an ID: a prefix of one? The names say, without reading them.
	ids, lerr := c.repo.chain.ListManifestIDs(ctx, c.name)
	if lerr != nil {
		return nil, lerr
	}
	var matches []string
	for _, id := range ids {
		if strings.HasPrefix(id, ref) {
			matches = append(matches, id)
		}
	}
	switch len(matches) {
	case 0:
		return nil, err
	case 1:
		m, err := c.repo.chain.LoadManifest(ctx, c.name, matches[0])
		if err != nil {
			return nil, err
		}
		return pointFromManifest(m), nil
	}
	return nil, fmt.Errorf("restore point %q in collection %q: %w: it begins %s", ref, c.name, ErrAmbiguous, strings.Join(matches, ", "))
}

// Used reports whether the collection has been used: it has restore
// points, state (such as a rate limiter's history) or hook logs of failed
// creates. A name that has none of them is most likely mistyped.
func (c *Collection) Used(ctx context.Context) (bool, error) {
	state, err := c.repo.chain.LoadCollectionState(ctx, c.name)
	if err != nil || state != nil {
		return state != nil, err
	}
	errFound := errors.New("found a hook log")
	err = c.repo.chain.HookLogs(ctx, c.name, func(string, []byte) error { return errFound })
	if errors.Is(err, errFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	points, err := c.List(ctx)
	return len(points) > 0, err
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
