package snapshot

import (
	"context"
	"fmt"
	"sync"

	"github.com/diskpoint/diskpoint/blockdiff"
	"github.com/diskpoint/diskpoint/chain"
)

// RepairReport says what a repair found and re-stored.
type RepairReport struct {
	Wanted   int `json:"wanted"`   // damaged or missing chunks
	Found    int `json:"found"`    // of those, found on the disks given
	Repaired int `json:"repaired"` // re-stored
}

// RepairFromDisks heals damaged or missing chunks named by a verify report
// from disks that still hold the same bytes: each disk is scanned, every
// block is hashed, and a block whose hash is a wanted chunk's ID is stored
// again. A bad incremental can then be healed instead of starting a new
// chain. Verify again afterwards to see what is left.
func (r *Repository) RepairFromDisks(ctx context.Context, report chain.VerifyReport, paths []string) (RepairReport, error) {
	wanted := map[chain.ID]bool{}
	for _, d := range report.Damage {
		for _, id := range d.DataBlobs {
			wanted[id] = true
		}
	}
	out := RepairReport{Wanted: len(wanted)}
	if len(wanted) == 0 {
		return out, nil
	}
	cfg := r.chain.Config()
	found := map[chain.ID][]byte{}
	var mu sync.Mutex
	for _, path := range paths {
		disk, err := blockdiff.OpenDisk(ctx, path)
		if err != nil {
			return out, fmt.Errorf("repair: %w", err)
		}
		_, err = blockdiff.Scan(ctx, disk, blockdiff.Options{
			BlockSize: cfg.BlockSize, SegmentBlocks: cfg.TreeFanout, Hash: r.chain.HashBlob,
			Store: func(_ context.Context, b blockdiff.Block) error {
				mu.Lock()
				defer mu.Unlock()
				if wanted[b.ID] && found[b.ID] == nil {
					found[b.ID] = append([]byte(nil), b.Data...)
				}
				return nil
			},
			Segment: func(context.Context, blockdiff.Segment) error { return nil },
		})
		disk.Close()
		if err != nil {
			return out, fmt.Errorf("repair from %s: %w", path, err)
		}
	}
	out.Found = len(found)
	if len(found) == 0 {
		return out, nil
	}
	n, err := r.chain.RepairBlobs(ctx, chain.DataBlob, found)
	out.Repaired = n
	return out, err
}
