package snapshot

import (
	"context"
	"fmt"

	"github.com/diskpoint/diskpoint/blockdiff"
)

// DiffOptions say what Diff compares. All three are required.
type DiffOptions struct {
	// Disk names the disk to compare.
	Disk string
	// From and To name the two restore points, as Collection.OpenDisk
	// names one: an ID, a unique prefix of one, or Latest (the newest that
	// has Disk).
	From, To string
}

// Diff returns the byte ranges of disk opts.Disk that differ between
// restore points opts.From and opts.To (the analogue of Azure's page-range
// diff and EBS's ListChangedBlocks), at block granularity, in order. The
// two need not be neighbours. It reads only the block-map nodes over what
// changed.
func (c *Collection) Diff(ctx context.Context, opts DiffOptions) ([]blockdiff.Range, error) {
	from, to, disk := opts.From, opts.To, opts.Disk
	if from == "" || to == "" || disk == "" {
		return nil, fmt.Errorf("diff in %q: DiffOptions.Disk, From and To are required (got %q, %q, %q)", c.name, disk, from, to)
	}
	points, lock, err := c.lockPointsWithDisk(ctx, "diff", disk, from, to)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	a, err := diskIn(c, points[0], disk)
	if err != nil {
		return nil, err
	}
	b, err := diskIn(c, points[1], disk)
	if err != nil {
		return nil, err
	}
	blocks, err := c.repo.chain.DiffTrees(lock.Context(), a.disk, b.disk)
	if lost := lock.Err(); err != nil && lost != nil {
		err = lost // why the reads were cancelled
	}
	if err != nil {
		return nil, fmt.Errorf("diff %s..%s disk %q: %w", a.point, b.point, disk, err)
	}
	size := max(a.disk.Size, b.disk.Size)
	bs := int64(a.disk.BlockSize)
	ranges := make([]blockdiff.Range, 0, len(blocks))
	for _, r := range blocks {
		off := r.First * bs
		ranges = append(ranges, blockdiff.Range{Offset: off, Length: min(r.Count*bs, size-off)})
	}
	return ranges, nil
}
