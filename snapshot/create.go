package snapshot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diskpoint/diskpoint/blockdiff"
	"github.com/diskpoint/diskpoint/chain"
	"golang.org/x/sync/errgroup"
)

// DiskSource is one disk to capture.
type DiskSource struct {
	// Name identifies the disk within the collection ("os", "data0"); the
	// next restore point compares against the last one with the same name.
	Name string
	// Path is a disk image file or a block device.
	Path string
	// ChangedOnly says Changed lists every byte range written since the
	// disk's previous restore point (a hypervisor's dirty bitmap): only
	// blocks those ranges touch are read. Without a previous restore point
	// of the disk, the whole disk is read anyway.
	ChangedOnly bool
	Changed     []blockdiff.Range
}

// CreateOptions configure Create.
type CreateOptions struct {
	Disks []DiskSource
	// Exclude names disks of Disks to leave out of this restore point.
	Exclude []string
	// VMConfig is stored with the restore point (a VM definition, say).
	VMConfig []byte
	// Workers per disk that read and hash; 0 means GOMAXPROCS.
	Workers int
	// Progress, if set, is called as each disk's scan advances.
	Progress func(Progress)
}

// Progress reports a create's advance on one disk.
type Progress struct {
	Disk  string
	Scan  blockdiff.Stats
	Bytes int64 // bytes added to the repository for this disk so far
}

// maxVMConfig bounds the configuration blob: it is metadata, not a disk.
const maxVMConfig = 16 << 20

// Create takes a restore point of the given disks. Each disk is read in
// parallel with the others and compared with its previous restore point in
// this collection, so only changed blocks are stored. The restore point
// becomes visible only when every disk's block map is durable; if Create
// fails, nothing is visible and what was written is garbage for GC.
//
// Create reads the disks as they are while it runs: the caller must make
// sure they do not change meanwhile (a stopped VM, or images captured for
// the purpose); the result is then crash-consistent.
func (c *Collection) Create(ctx context.Context, opts CreateOptions) (*RestorePoint, error) {
	disks, excluded, err := c.selectDisks(opts)
	if err != nil {
		return nil, err
	}
	if len(opts.VMConfig) > maxVMConfig {
		return nil, fmt.Errorf("create in %q: VM config of %d bytes is over the %d-byte limit", c.name, len(opts.VMConfig), maxVMConfig)
	}
	opened := make([]*blockdiff.Disk, len(disks))
	defer func() {
		for _, d := range opened {
			if d != nil {
				d.Close()
			}
		}
	}()
	for i, src := range disks {
		if opened[i], err = blockdiff.OpenDisk(ctx, src.Path); err != nil {
			return nil, fmt.Errorf("create in %q: disk %q: %w", c.name, src.Name, err)
		}
	}
	previous, err := c.List(ctx)
	if err != nil {
		return nil, err
	}

	w, err := c.repo.chain.NewWriter(ctx, "create "+c.name)
	if err != nil {
		return nil, fmt.Errorf("create in %q: %w", c.name, err)
	}
	defer w.Close()

	m := chain.Manifest{
		ID:          newRestorePointID(),
		Collection:  c.name,
		Created:     time.Now().UTC(),
		Consistency: "crash",
		Excluded:    excluded,
		Disks:       make([]chain.DiskManifest, len(disks)),
	}
	if len(opts.VMConfig) > 0 {
		m.Config, m.ConfigSize = chain.Hash(opts.VMConfig), int64(len(opts.VMConfig))
		if _, err := w.PutBlob(ctx, chain.DataBlob, m.Config, opts.VMConfig); err != nil {
			return nil, fmt.Errorf("create in %q: VM config: %w", c.name, err)
		}
	}
	if progress := opts.Progress; progress != nil {
		var mu sync.Mutex // disks report from their own goroutines; callers get one at a time
		opts.Progress = func(p Progress) {
			mu.Lock()
			defer mu.Unlock()
			progress(p)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	for i, src := range disks {
		parent := parentOf(previous, src.Name)
		g.Go(func() error {
			dm, err := c.captureDisk(gctx, w, src, opened[i], parent, opts)
			if err != nil {
				return fmt.Errorf("create in %q: disk %q: %w", c.name, src.Name, err)
			}
			m.Disks[i] = dm
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if err := w.SaveManifest(ctx, &m); err != nil {
		return nil, fmt.Errorf("create in %q: %w", c.name, err)
	}
	return &RestorePoint{m}, nil
}

// selectDisks checks the disk names and applies Exclude.
func (c *Collection) selectDisks(opts CreateOptions) ([]DiskSource, []string, error) {
	seen := map[string]bool{}
	for _, d := range opts.Disks {
		if err := chain.CheckName("disk", d.Name); err != nil {
			return nil, nil, fmt.Errorf("create in %q: %w", c.name, err)
		}
		if seen[d.Name] {
			return nil, nil, fmt.Errorf("create in %q: disk %q named twice: %w", c.name, d.Name, ErrInvalidName)
		}
		seen[d.Name] = true
	}
	exclude := map[string]bool{}
	excluded := []string{}
	for _, name := range opts.Exclude {
		if !seen[name] {
			return nil, nil, fmt.Errorf("create in %q: cannot exclude disk %q: no disk of that name: %w", c.name, name, ErrNotFound)
		}
		if !exclude[name] {
			exclude[name] = true
			excluded = append(excluded, name)
		}
	}
	var disks []DiskSource
	for _, d := range opts.Disks {
		if !exclude[d.Name] {
			disks = append(disks, d)
		}
	}
	if len(disks) == 0 {
		return nil, nil, fmt.Errorf("create in %q: no disks to capture", c.name)
	}
	return disks, excluded, nil
}

// parentOf finds the newest restore point that holds disk name.
func parentOf(points []*RestorePoint, name string) *parentDisk {
	for i := len(points) - 1; i >= 0; i-- {
		if d, ok := points[i].Disk(name); ok {
			return &parentDisk{point: points[i].ID, disk: d}
		}
	}
	return nil
}

type parentDisk struct {
	point string
	disk  chain.DiskManifest
}

// treeParent lets blockdiff read the parent's block IDs from its block map.
type treeParent struct{ tree *chain.TreeReader }

func (p treeParent) Size() int64 { return p.tree.Geometry().Size }

func (p treeParent) SegmentIDs(ctx context.Context, j int64, dst []chain.ID) ([]chain.ID, error) {
	return p.tree.Leaf(ctx, j, dst)
}

// captureDisk scans one disk and writes its block map.
func (c *Collection) captureDisk(ctx context.Context, w *chain.Writer, src DiskSource, disk *blockdiff.Disk, parent *parentDisk, opts CreateOptions) (chain.DiskManifest, error) {
	cfg := c.repo.chain.Config()
	dm := chain.DiskManifest{Name: src.Name, Size: disk.Size, BlockSize: cfg.BlockSize}
	tree := chain.NewTreeBuilder(w, chain.Geometry{Size: disk.Size, BlockSize: cfg.BlockSize, Fanout: cfg.TreeFanout})
	var parentTree *chain.TreeReader
	scanOpts := blockdiff.Options{
		BlockSize:     cfg.BlockSize,
		SegmentBlocks: cfg.TreeFanout,
		Workers:       opts.Workers,
	}
	if parent != nil && parent.disk.BlockSize == cfg.BlockSize {
		dm.Parent = parent.point
		parentTree = c.repo.chain.OpenTree(parent.disk)
		scanOpts.Parent = treeParent{parentTree}
		scanOpts.ChangedOnly, scanOpts.Changed = src.ChangedOnly, src.Changed
	}
	var stored, newChunks atomic.Int64
	scanOpts.Store = func(ctx context.Context, b blockdiff.Block) error {
		n, err := w.PutBlob(ctx, chain.DataBlob, b.ID, b.Data)
		if n > 0 {
			stored.Add(int64(n))
			newChunks.Add(int64(len(b.Data)))
		}
		return err
	}
	scanOpts.Segment = func(ctx context.Context, s blockdiff.Segment) error {
		if s.Reused {
			id, err := parentTree.LeafID(ctx, s.Index)
			if err != nil {
				return err
			}
			return tree.AddLeafID(ctx, id)
		}
		return tree.AddLeaf(ctx, s.IDs)
	}
	if opts.Progress != nil {
		scanOpts.Progress = func(st blockdiff.Stats) {
			opts.Progress(Progress{Disk: src.Name, Scan: st, Bytes: stored.Load() + tree.StoredBytes()})
		}
	}
	stats, err := blockdiff.Scan(ctx, disk, scanOpts)
	if err != nil {
		return dm, err
	}
	if dm.Root, err = tree.Finish(ctx); err != nil {
		return dm, err
	}
	dm.ChangedBytes = stats.ChangedBytes
	dm.MetadataBytes = tree.StoredBytes()
	dm.StoredBytes = stored.Load() + dm.MetadataBytes
	dm.NewChunkBytes = newChunks.Load()
	return dm, nil
}

// newRestorePointID returns an ID that sorts by time and reads well:
// 20261122-013607-3f9a2c.
func newRestorePointID() string {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(errors.Join(errors.New("crypto/rand failed"), err))
	}
	return time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}
