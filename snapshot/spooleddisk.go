package snapshot

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/diskpoint/diskpoint/blockdiff"
	"github.com/diskpoint/diskpoint/chain"
	"golang.org/x/sync/errgroup"
)

// spooledDisk is the blockSink of a disk read inside the freeze window,
// where only reading, hashing and comparing with the parent may happen: it
// keeps the changed blocks' bytes and every segment's block IDs in the
// capture's spool, and after the thaw hands them to the disk's diskWriter,
// which compresses, stores and builds the block map. A block's bytes go
// into the spool from the scan's private copy, the bytes its ID was hashed
// from, and are checked against the ID when read back from the file.
type spooledDisk struct {
	sp   *spool
	dw   *diskWriter
	hash func([]byte) chain.ID // the scan's: names a block by its bytes

	mu     sync.Mutex
	blocks []spooledBlock

	segments []spooledSegment // in order: appended by the scan's one goroutine
	idBuf    []byte
	stats    blockdiff.Stats // the scan's, once it has ended
}

type spooledBlock struct {
	index int64
	id    chain.ID
	rec   spoolRecord
}

type spooledSegment struct {
	index        int64
	reused       bool
	changedBytes int64
	blocks       int         // how many block IDs
	zero         bool        // every block is zeros: nothing was spooled
	ids          spoolRecord // chain.IDSize bytes per block
	sum          chain.ID    // chain.Hash of the IDs' bytes, checked when read back
}

func newSpooledDisk(sp *spool, dw *diskWriter, hash func([]byte) chain.ID) *spooledDisk {
	return &spooledDisk{sp: sp, dw: dw, hash: hash}
}

func (sd *spooledDisk) putBlock(_ context.Context, b blockdiff.Block) error {
	if sd.dw.w.Repository().HasBlob(b.ID) || !sd.sp.claim(b.ID) {
		return nil // stored already, or spooled from elsewhere: storing it would add nothing
	}
	rec, err := sd.sp.put(b.Data)
	if err != nil {
		return fmt.Errorf("block %d: %w", b.Index, err)
	}
	sd.mu.Lock()
	sd.blocks = append(sd.blocks, spooledBlock{index: b.Index, id: b.ID, rec: rec})
	sd.mu.Unlock()
	return nil
}

func (sd *spooledDisk) addSegment(_ context.Context, s blockdiff.Segment) error {
	seg := spooledSegment{index: s.Index, reused: s.Reused, changedBytes: s.ChangedBytes, blocks: len(s.IDs)}
	if !s.Reused {
		seg.zero = allZeroIDs(s.IDs)
	}
	if !s.Reused && !seg.zero {
		sd.idBuf = sd.idBuf[:0]
		for _, id := range s.IDs {
			sd.idBuf = append(sd.idBuf, id[:]...)
		}
		rec, err := sd.sp.put(sd.idBuf)
		if err != nil {
			return fmt.Errorf("block map segment %d: %w", s.Index, err)
		}
		seg.ids = rec
		if rec.inFile() {
			seg.sum = chain.Hash(sd.idBuf)
		}
	}
	sd.segments = append(sd.segments, seg)
	return nil
}

// storeBlocks compresses and stores the spooled blocks, workers at a time
// (0 means GOMAXPROCS), freeing each one's memory once it is stored;
// progress, if set, is called now and then.
func (sd *spooledDisk) storeBlocks(ctx context.Context, workers int, progress func()) error {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range workers {
		g.Go(func() error {
			var buf []byte
			for {
				i := next.Add(1) - 1
				if i >= int64(len(sd.blocks)) {
					return nil
				}
				b := &sd.blocks[i]
				data, err := sd.sp.get(b.rec, &buf)
				if err != nil {
					return fmt.Errorf("block %d: %w", b.index, err)
				}
				if b.rec.inFile() && sd.hash(data) != b.id {
					return fmt.Errorf("block %d: the spool file in %s gave back other bytes than were read from the disk", b.index, sd.sp.dir)
				}
				if err := sd.dw.putBlock(gctx, blockdiff.Block{Index: b.index, ID: b.id, Data: data}); err != nil {
					return err
				}
				b.rec = spoolRecord{}
				if progress != nil && i%256 == 255 {
					progress()
				}
			}
		})
	}
	return g.Wait()
}

// buildMap adds the spooled segments to the disk's block map, in order,
// and finishes it. Every spooled block must be stored first: a block-map
// node is never stored before the blocks it names.
func (sd *spooledDisk) buildMap(ctx context.Context) (chain.DiskManifest, error) {
	var buf []byte
	var ids []chain.ID
	for i := range sd.segments {
		seg := &sd.segments[i]
		s := blockdiff.Segment{Index: seg.index, Reused: seg.reused, ChangedBytes: seg.changedBytes}
		switch {
		case seg.reused:
		case seg.zero:
			ids = slices.Grow(ids[:0], seg.blocks)[:seg.blocks]
			clear(ids)
			s.IDs = ids
		default:
			raw, err := sd.sp.get(seg.ids, &buf)
			if err != nil {
				return sd.dw.dm, fmt.Errorf("block map segment %d: %w", seg.index, err)
			}
			if seg.ids.inFile() && chain.Hash(raw) != seg.sum {
				return sd.dw.dm, fmt.Errorf("block map segment %d: the spool file in %s gave back other bytes than were put", seg.index, sd.sp.dir)
			}
			ids = ids[:0]
			for k := 0; k < seg.blocks; k++ {
				ids = append(ids, chain.ID(raw[k*chain.IDSize:(k+1)*chain.IDSize]))
			}
			s.IDs = ids
		}
		if err := sd.dw.addSegment(ctx, s); err != nil {
			return sd.dw.dm, err
		}
		seg.ids = spoolRecord{}
	}
	return sd.dw.finish(ctx, sd.stats)
}

func allZeroIDs(ids []chain.ID) bool {
	for _, id := range ids {
		if !id.IsZero() {
			return false
		}
	}
	return true
}
