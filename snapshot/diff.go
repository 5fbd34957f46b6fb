package snapshot

import (
	"context"
	"fmt"

	"github.com/diskpoint/diskpoint/blockdiff"
)

// Diff returns the byte ranges of disk that differ between restore points
// from and to (the analogue of Azure's page-range diff and EBS's
// ListChangedBlocks), at block granularity, in order. The two need not be
// neighbours. It reads only the block-map nodes over what changed.
func (c *Collection) Diff(ctx context.Context, from, to, disk string) ([]blockdiff.Range, error) {
	a, err := c.diskOf(ctx, from, disk)
	if err != nil {
		return nil, err
	}
	b, err := c.diskOf(ctx, to, disk)
	if err != nil {
		return nil, err
	}
	blocks, err := c.repo.chain.DiffTrees(ctx, a.disk, b.disk)
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

// diskOf finds disk in restore point id (or Latest).
func (c *Collection) diskOf(ctx context.Context, id, disk string) (*pointDisk, error) {
	rp, err := c.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	d, ok := rp.Disk(disk)
	if !ok {
		return nil, fmt.Errorf("restore point %s/%s has no disk %q: %w", c.name, rp.ID, disk, ErrNotFound)
	}
	return &pointDisk{point: rp.ID, disk: d}, nil
}
