package snapshot

import (
	"context"
	"errors"

	"github.com/diskpoint/diskpoint/blockdiff"
)

// open opens the disk s names: its file or block device, its reader, or
// its NBD export.
// snapshotter says a Snapshotter will capture the disks, which it can only
// do by path.
func (s *DiskSource) open(ctx context.Context, snapshotter bool) (*blockdiff.Disk, error) {
	if (s.NextBitmap != "" || s.HeldStill != 0) && s.NBD == "" {
		return nil, errors.New("NextBitmap and HeldStill are for an NBD export, and the disk is not one")
	}
	if s.Bitmap != "" && s.NBD == "" {
		return nil, errors.New("a Bitmap is read from an NBD export, and the disk is not one")
	}
	if s.NBD != "" {
		switch {
		case s.Path != "" || s.Reader != nil || s.Size != 0:
			return nil, errors.New("NBD is given with a Path, Reader or Size: a disk is one of them")
		case snapshotter:
			return nil, errors.New("a Snapshotter captures disks by path, and this one is an NBD export")
		}
		return s.openNBD(ctx)
	}
	switch {
	case s.Reader == nil && s.Size != 0:
		return nil, errors.New("Size is given without a Reader")
	case s.Reader == nil:
		return blockdiff.OpenDisk(ctx, s.Path)
	case s.Path != "":
		return nil, errors.New("both Path and Reader are given: a disk is one or the other")
	case snapshotter:
		return nil, errors.New("a Snapshotter captures disks by path, and this one is a Reader")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return blockdiff.NewReaderDisk(s.Name, s.Reader, s.Size)
}
