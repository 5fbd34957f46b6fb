package snapshot

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/diskpoint/diskpoint/chain"
)

// restoreBatchBytes is how much of a disk one pass of restoreInPackOrder
// covers: the block IDs of a batch (32 bytes per block) and the plan of
// its reads are held at once, 2 MiB of IDs for 4 GiB of 64 KiB blocks.
const restoreBatchBytes = 4 << 30

// restoreInPackOrder writes the blocks plan wants in the order of the
// packs that hold them, not the disk's: the block map is read a batch of
// leaves at a time, and the batch's blocks are fetched with
// chain.ReadBlobsInParallel, which reads each pack in a few large spans
// and decodes them in workers goroutines, each block written where it
// belongs as it is decoded. Read leaf by leaf, a pack that holds the
// blocks of many leaves (a create interleaves its workers' blocks, and a
// duplicate block points back to an older pack) was read in many small
// pieces, one request each on an object store: restoring the comparison
// image from MinIO took 1164 ranged GETs, 844 of them under 1 MiB, for 58
// packs.
func (c *Collection) restoreInPackOrder(ctx context.Context, plan restorePlan, t *target, tree *chain.TreeReader, workers int, progress func(done, total int64)) (RestoreStats, error) {
	stats := RestoreStats{Size: plan.disk.Size}
	g := tree.Geometry()
	bs := int64(plan.disk.BlockSize)
	var written, wrote, done atomic.Int64
	report := func(n int64) {
		if progress != nil {
			progress(done.Add(n), plan.disk.Size)
		}
	}
	zeroBlock := make([]byte, bs)
	var ids []chain.ID
	var blocks []int64 // the disk block of each of ids
	fetch := func() error {
		err := c.repo.chain.ReadBlobsInParallel(ctx, chain.DataBlob, ids, workers, func(i int, data []byte) error {
			block := blocks[i]
			if n := g.BlockLength(block); len(data) != n {
				return &chain.CorruptError{Object: "data blob " + ids[i].String(), Reason: fmt.Sprintf("%d bytes where block %d has %d", len(data), block, n)}
			}
			if _, err := t.file.WriteAt(data, block*bs); err != nil {
				return fmt.Errorf("write %s at %d: %w", t.path, block*bs, err)
			}
			written.Add(int64(len(data)))
			wrote.Add(1)
			report(int64(len(data)))
			return nil
		})
		ids, blocks = ids[:0], blocks[:0]
		return err
	}
	batchBlocks := max(restoreBatchBytes/bs, int64(g.Fanout))
	finish := func(err error) (RestoreStats, error) {
		stats.WrittenBytes = written.Load()
		stats.BlocksWritten = wrote.Load()
		return stats, err
	}
	for j := int64(0); j < g.Leaves(); j++ {
		first := j * int64(g.Fanout)
		if !plan.wants(first, g.LeafBlocks(j)) {
			stats.BlocksSkipped += int64(g.LeafBlocks(j))
			report(g.LeafBytes(j))
			continue
		}
		leafIDs, err := tree.Leaf(ctx, j, nil)
		if err != nil {
			return finish(err)
		}
		for i, id := range leafIDs {
			block := first + int64(i)
			n := g.BlockLength(block)
			switch {
			case !plan.wants(block, 1):
				stats.BlocksSkipped++
				report(int64(n))
			case id.IsZero():
				stats.ZeroBytes += int64(n)
				if plan.holdsData {
					if err := t.writeZeros(block*bs, n, zeroBlock); err != nil {
						return finish(fmt.Errorf("write zeros at %d: %w", block*bs, err))
					}
					wrote.Add(1)
				}
				report(int64(n))
			default:
				ids = append(ids, id)
				blocks = append(blocks, block)
			}
		}
		if int64(len(ids)) >= batchBlocks {
			if err := fetch(); err != nil {
				return finish(err)
			}
		}
	}
	return finish(fetch())
}
