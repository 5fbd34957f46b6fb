package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/diskpoint/diskpoint/snapshot"
	"github.com/dustin/go-humanize"
	"golang.org/x/sys/unix"
)

// geteuid is os.Geteuid, which tests replace to see the check for root.
var geteuid = os.Geteuid

// runFiles copies files out of a file system inside a disk of a restore
// point, with the kernel's own file system drivers: it mounts the
// repository (snapshot.Mount), reads the disk's partition table, attaches
// the partition read-only to a loop device, mounts it read-only, and copies
// the paths asked for. Everything it attached or mounted is undone when it
// ends, whether it worked or not.
func runFiles(ctx context.Context, e *env, fs *flag.FlagSet, args []string) (err error) {
	repoDir := fs.String("repo", "", repoFlagUsage)
	collection := fs.String("collection", "", "collection `name`")
	point := fs.String("point", "", "restore point: `ID`, a unique prefix of one, or latest (the newest that has the disk)")
	disk := fs.String("disk", "", "disk `name`")
	partitionNumber := fs.Int("partition", 0, "the partition `N` holding the file system (default: the only one, or the whole disk when it has no partition table)")
	to := fs.String("to", "", "copy into `DIR`, each path under its full name (DIR/etc/fstab)")
	if err := parse(fs, args, map[string]*string{"repo": repoDir, "collection": collection, "point": point, "disk": disk, "to": to}); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageError{"name the paths to copy out of the file system (like /etc/fstab /var/lib/app)"}
	}
	if geteuid() != 0 {
		return errors.New("diskpoint files needs root: it attaches loop devices and mounts file systems (as another user, use diskpoint mount and read DISK.img)")
	}
	repo, c, err := openCollection(ctx, e, *repoDir, *collection)
	if err != nil {
		return err
	}
	defer repo.Close()
	rp, err := c.GetWithDisk(ctx, *point, *disk)
	if err != nil {
		return err
	}
	if _, ok := rp.Disk(*disk); !ok {
		return fmt.Errorf("restore point %s/%s has no disk %q", c.Name(), rp.ID, *disk)
	}

	// Undo, in reverse, everything done from here; its failures are
	// reported with the command's.
	var undo []func() error
	defer func() {
		for i := len(undo) - 1; i >= 0; i-- {
			if undoErr := undo[i](); undoErr != nil {
				err = errors.Join(err, undoErr)
			}
		}
	}()
	work, err := os.MkdirTemp("", "diskpoint-files-")
	if err != nil {
		return err
	}
	repoMount, fsMount := filepath.Join(work, "repository"), filepath.Join(work, "filesystem")
	undo = append(undo, func() error { return os.Remove(work) })
	for _, dir := range []string{repoMount, fsMount} {
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
		undo = append(undo, func() error { return os.Remove(dir) })
	}
	m, err := snapshot.Mount(ctx, repo, repoMount, snapshot.MountOptions{Logger: e.logger()})
	if err != nil {
		return err
	}
	undo = append(undo, func() error {
		if err := m.Unmount(); err != nil {
			return m.Detach()
		}
		return nil
	})
	image := filepath.Join(repoMount, c.Name(), rp.ID, *disk+".img")
	part, fsType, err := choosePartition(image, *partitionNumber)
	if err != nil {
		return fmt.Errorf("%s/%s disk %s: %w", c.Name(), rp.ID, *disk, err)
	}
	loop, err := attachLoop(image, part.Start, part.Size)
	if err != nil {
		return err
	}
	undo = append(undo, loop.detach)
	mountedType, err := mountReadOnly(loop.path, fsMount, fsType)
	if err != nil {
		return fmt.Errorf("%s/%s disk %s %s: %w", c.Name(), rp.ID, *disk, part.describe(), err)
	}
	undo = append(undo, func() error {
		if err := unix.Unmount(fsMount, 0); err != nil {
			return errors.Join(fmt.Errorf("unmount %s: %w", fsMount, err), unix.Unmount(fsMount, unix.MNT_DETACH))
		}
		return nil
	})
	copied, err := copyPaths(ctx, e, fsMount, fs.Args(), *to)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "copied %s, %s and %s (%s) from %s/%s disk %s %s (%s) to %s\n",
		count(copied.files, "file"), directories(copied.dirs), count(copied.links, "symbolic link"), humanize.IBytes(uint64(copied.bytes)),
		c.Name(), rp.ID, *disk, part.describe(), mountedType, *to)
	return nil
}

// directories is n directories, in words.
func directories(n int) string {
	if n == 1 {
		return "1 directory"
	}
	return fmt.Sprintf("%d directories", n)
}

// describe names the partition, or the whole disk.
func (p diskPartition) describe() string {
	if p.Number == 0 {
		return "(no partition table)"
	}
	return fmt.Sprintf("partition %d", p.Number)
}

// choosePartition reads the image's partition table and returns partition
// number (0: the only one, or the whole disk when it has no table), and
// the file system its first bytes say it holds ("" if they do not say).
func choosePartition(image string, number int) (diskPartition, string, error) {
	f, err := os.Open(image)
	if err != nil {
		return diskPartition{}, "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return diskPartition{}, "", err
	}
	parts, err := readPartitions(f, st.Size())
	var chosen diskPartition
	switch {
	case errors.Is(err, errNoPartitionTable) && number > 0:
		return chosen, "", fmt.Errorf("there is no partition table: leave out -partition to read the whole disk")
	case errors.Is(err, errNoPartitionTable):
		chosen = diskPartition{Start: 0, Size: st.Size()}
	case err != nil:
		return chosen, "", err
	case number == 0 && len(parts) == 1:
		chosen = parts[0]
	default:
		var list []string
		for _, p := range parts {
			if p.Number == number {
				chosen = p
			}
			list = append(list, fmt.Sprintf("%d (%s at %d, %q)", p.Number, humanize.IBytes(uint64(p.Size)), p.Start, p.Name))
		}
		if chosen.Size == 0 {
			return chosen, "", fmt.Errorf("choose a partition with -partition N: %s", strings.Join(list, ", "))
		}
	}
	return chosen, detectFileSystem(f, chosen.Start), nil
}

// detectFileSystem tells ext2/3/4 and XFS by their superblocks' magic,
// which decides the mount options; "" for anything else.
func detectFileSystem(f io.ReaderAt, start int64) string {
	var xfs [4]byte
	var ext [2]byte
	if _, err := f.ReadAt(xfs[:], start); err == nil && string(xfs[:]) == "XFSB" {
		return "xfs"
	}
	if _, err := f.ReadAt(ext[:], start+1024+56); err == nil && ext == [2]byte{0x53, 0xef} {
		return "ext4"
	}
	return ""
}

// mountReadOnly mounts device on dir read-only, leaving the file system
// untouched: no journal replay (ext4 noload, XFS norecovery), and XFS's
// UUID unchecked, since every restore point of a file system has the same
// one. A type it does not know is tried with each driver the kernel has,
// as mount -t auto does. It returns the type that mounted.
func mountReadOnly(device, dir, fsType string) (string, error) {
	options := map[string]string{"ext4": "noload", "xfs": "norecovery,nouuid"}
	types := []string{fsType}
	if fsType == "" {
		types = kernelFileSystems()
	}
	var errs []error
	for _, t := range types {
		err := unix.Mount(device, dir, t, unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID|unix.MS_NOEXEC, options[t])
		if err == nil {
			return t, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", t, err))
	}
	return "", fmt.Errorf("mount %s read-only: no file system driver took it: %w", device, errors.Join(errs...))
}

// kernelFileSystems lists the block-device file systems the kernel has.
func kernelFileSystems() []string {
	data, _ := os.ReadFile("/proc/filesystems")
	var types []string
	for _, line := range strings.Split(string(data), "\n") {
		if fields := strings.Fields(line); len(fields) == 1 {
			types = append(types, fields[0])
		}
	}
	return types
}

// copyStats counts what copyPaths copied.
type copyStats struct {
	files, dirs, links int
	bytes              int64
}

// copyPaths copies each of paths, named as inside the file system mounted
// at root, to the same name under to, with modes, owners and modification
// times. Symbolic links in the paths resolve inside the file system, never
// out of it; links inside a copied tree are copied as links. Files that
// exist under to already are not overwritten.
func copyPaths(ctx context.Context, e *env, root string, paths []string, to string) (copyStats, error) {
	var stats copyStats
	rootFD, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return stats, err
	}
	defer unix.Close(rootFD)
	if err := os.MkdirAll(to, 0o755); err != nil {
		return stats, err
	}
	for _, p := range paths {
		rel := strings.TrimPrefix(filepath.Clean("/"+p), "/")
		if rel == "" {
			rel = "."
		}
		fd, err := unix.Openat2(rootFD, rel, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
		})
		if err != nil {
			return stats, fmt.Errorf("%s: %w", p, err)
		}
		real, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
		unix.Close(fd)
		if err != nil {
			return stats, err
		}
		if real != root && !strings.HasPrefix(real, root+"/") {
			return stats, fmt.Errorf("%s resolves to %s, outside the file system", p, real)
		}
		dst := filepath.Join(to, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return stats, err
		}
		if err := copyTree(ctx, e, real, dst, &stats); err != nil {
			return stats, err
		}
	}
	return stats, nil
}

// copyTree copies src (a file, link or directory tree) to dst.
// Directories get their modes and times after their contents.
func copyTree(ctx context.Context, e *env, src, dst string, stats *copyStats) error {
	type dirDone struct {
		path string
		info fs.FileInfo
	}
	var dirs []dirDone
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		switch {
		case info.IsDir():
			if err := os.Mkdir(target, 0o700); err != nil && !(errors.Is(err, fs.ErrExist) && isDir(target)) {
				return err
			}
			dirs = append(dirs, dirDone{target, info})
			stats.dirs++
			return nil
		case info.Mode().IsRegular():
			n, err := copyFile(ctx, path, target)
			if err != nil {
				return err
			}
			stats.files++
			stats.bytes += n
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			if err := os.Symlink(link, target); err != nil {
				return err
			}
			stats.links++
		default:
			fmt.Fprintf(e.stderr, "diskpoint files: left out %s: a %s\n", path, info.Mode().Type())
			return nil
		}
		return setMetadata(target, info)
	})
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := setMetadata(dirs[i].path, dirs[i].info); err != nil {
			return err
		}
	}
	return nil
}

func isDir(path string) bool {
	st, err := os.Lstat(path)
	return err == nil && st.IsDir()
}

// copyFile copies a regular file's bytes to a new file.
func copyFile(ctx context.Context, src, dst string) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(out, contextReader{ctx, in})
	if closeErr := out.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return n, fmt.Errorf("copy %s: %w", src, err)
	}
	return n, nil
}

// contextReader stops a copy when ctx ends (Ctrl-C).
type contextReader struct {
	ctx context.Context
	r   io.Reader
}

func (c contextReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// setMetadata gives path (not following a link) info's owner, mode and
// modification time.
func setMetadata(path string, info fs.FileInfo) error {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		if err := os.Lchown(path, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
	}
	if info.Mode()&fs.ModeSymlink == 0 {
		if err := os.Chmod(path, info.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
			return err
		}
	}
	mtime := unix.NsecToTimespec(info.ModTime().UnixNano())
	return unix.UtimesNanoAt(unix.AT_FDCWD, path, []unix.Timespec{mtime, mtime}, unix.AT_SYMLINK_NOFOLLOW)
}
