package snapshot

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/diskpoint/diskpoint/chain"
)

// newestWithDisks finds, for each name in disks, the newest restore point
// that has a disk of that name ("" stands for any disk: the newest point).
// Newest means latest Created, as List orders. Damaged manifests are
// passed over, as List passes them over.
//
// It asks the collection's heads record first (chain.NewestManifests): a
// listing of names and a read per point found, however many points the
// collection has. When the record cannot be used, a create (rebuild)
// reads every manifest once and stores a new record; a reader, which
// writes nothing, scans the newest manifests (newestByScan).
func (c *Collection) newestWithDisks(ctx context.Context, disks []string, rebuild bool) (pointsByDisk, error) {
	manifests, ok, err := c.repo.chain.NewestManifests(ctx, c.name, disks, rebuild)
	if err != nil {
		return nil, err
	}
	if !ok {
		return c.newestByScan(ctx, disks)
	}
	found := pointsByDisk{}
	for name, m := range manifests {
		found[name] = pointFromManifest(m)
	}
	return found, nil
}

// newestByScan is newestWithDisks without the heads record, reading
// manifests newest first and stopping once every name is found: a restore
// of "latest" in a collection of thousands of points so reads one or two
// manifests, not all of them (unless they share their second).
//
// IDs begin with their creation time to the second (newRestorePointID),
// so manifests are read one second's worth at a time, in descending order
// of that prefix, and compared by Created within it. A collection with an
// ID of any other shape is searched the slow way, through List.
func (c *Collection) newestByScan(ctx context.Context, disks []string) (pointsByDisk, error) {
	found := pointsByDisk{}
	ids, err := c.repo.chain.ListManifestIDs(ctx, c.name)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if _, ok := idTime(id); !ok {
			points, err := c.List(ctx)
			if err != nil {
				return nil, err
			}
			for _, rp := range points { // oldest first: the newest wins
				found.note(rp, disks)
			}
			return found, nil
		}
	}
	for end := len(ids); end > 0 && len(found) < len(disks); {
		second, _ := idTime(ids[end-1])
		start := end - 1
		for start > 0 {
			if t, _ := idTime(ids[start-1]); !t.Equal(second) {
				break
			}
			start--
		}
		var group []*RestorePoint
		for _, id := range ids[start:end] {
			m, err := c.repo.chain.LoadManifest(ctx, c.name, id)
			if errors.Is(err, ErrNotFound) || errors.As(err, new(*chain.CorruptError)) {
				continue // deleted meanwhile, or damaged: List leaves it out too
			}
			if err != nil {
				return nil, err
			}
			group = append(group, pointFromManifest(m))
		}
		sortByCreated(group)
		newest := pointsByDisk{}
		for _, rp := range group {
			newest.note(rp, disks)
		}
		for name, rp := range newest {
			if found[name] == nil { // a newer second found it already
				found[name] = rp
			}
		}
		end = start
	}
	return found, nil
}

// pointsByDisk maps a disk name to the newest restore point found with it.
type pointsByDisk map[string]*RestorePoint

// note records rp for each name in disks it has, replacing what was found
// in older points; points must come oldest first within what is compared.
func (f pointsByDisk) note(rp *RestorePoint, disks []string) {
	for _, name := range disks {
		if _, ok := rp.Disk(name); ok || name == "" {
			f[name] = rp
		}
	}
}

// idTime is the creation second an ID of newRestorePointID's shape begins
// with.
func idTime(id string) (time.Time, bool) {
	if len(id) < len("20060102-150405") {
		return time.Time{}, false
	}
	t, err := time.Parse("20060102-150405", id[:len("20060102-150405")])
	return t, err == nil
}

// sortByCreated orders points as List does: by Created, then ID.
func sortByCreated(points []*RestorePoint) {
	sort.Slice(points, func(i, j int) bool {
		if a, b := points[i].Created, points[j].Created; !a.Equal(b) {
			return a.Before(b)
		}
		return points[i].ID < points[j].ID
	})
}
