package blockdiff

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Snapshotter captures disks at one instant: LVM or device-mapper
// snapshots, a storage array's, a hypervisor's. It is called while the
// disks are held still (file systems frozen, I/O paused), so it must be
// quick; the copies it returns are read afterwards.
type Snapshotter interface {
	Snapshot(ctx context.Context, paths []string) (Snapshot, error)
}

// Snapshot is a set of point-in-time copies of disks.
type Snapshot interface {
	// Paths are the copies, in the order the disks were given.
	Paths() []string
	// Release discards the copies.
	Release(ctx context.Context) error
}

// ErrNoReflink: the file system cannot clone files (FICLONE).
var ErrNoReflink = errors.New("file system does not support reflink clones")

// ReflinkClone makes a copy-on-write clone of the file at path, beside it,
// with FICLONE: it costs metadata only, however large the file, so it fits
// in a freeze window. The clone is named ".PATH.diskpoint-capture-*"; the
// caller removes it. File systems without reflinks (ext4, tmpfs) give an
// error wrapping ErrNoReflink.
func ReflinkClone(ctx context.Context, path string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	src, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("clone %s: %w", path, err)
	}
	defer src.Close()
	dst, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".diskpoint-capture-*")
	if err != nil {
		return "", fmt.Errorf("clone %s: %w", path, err)
	}
	err = unix.IoctlFileClone(int(dst.Fd()), int(src.Fd()))
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst.Name())
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) {
			return "", fmt.Errorf("clone %s: %w (%v)", path, ErrNoReflink, err)
		}
		return "", fmt.Errorf("clone %s: %w", path, err)
	}
	return dst.Name(), nil
}
