package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/diskpoint/diskpoint/blockdiff"
	"github.com/diskpoint/diskpoint/chain"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// RestoreOptions say what RestoreDisk restores, where, and how. Point,
// Disk and Path are required.
type RestoreOptions struct {
	// Point names the restore point: an ID, a unique prefix of one, or
	// Latest, the newest restore point that has Disk.
	Point string
	// Disk names the disk of the restore point to restore.
	Disk string
	// Path is the target: a file (written beside it and renamed into place
	// when complete), a block device, a symbolic link to either, or a
	// directory (the disk is then written to DIR/DISK.img).
	Path string
	// Workers fetch, decompress, verify and write in parallel; 0 means
	// twice GOMAXPROCS (restores wait on I/O as much as on the CPU).
	Workers int
	// Progress, if set, is called with the disk bytes done and the total,
	// one call at a time.
	Progress func(done, total int64)
	// Incremental restores onto an existing target, writing only the
	// blocks that differ from the restore point: each target block is read
	// and hashed, and written only when it differs. Rolling a disk back to
	// yesterday then costs the changed blocks, not the disk. An interrupted
	// incremental restore leaves a mix; run it again to finish.
	Incremental bool
	// From, with Incremental, names the restore point the target holds now:
	// the block maps say which blocks differ, and the target is not read at
	// all. The caller vouches that the target holds From.
	From string
	// Overwrite lets a restore replace an existing file or write over an
	// existing block device. Without it, an existing target is refused
	// (ErrExists), unless Incremental, which updates it in place.
	Overwrite bool
	// Sync makes the restored disk durable (fsync) before RestoreDisk
	// returns. Without it the data reaches the disk as the kernel writes it
	// back, as after cp, restic or borg; with it, a restore is bounded by the
	// disk's write speed.
	Sync bool
}

// RestoreStats says what a restore did.
type RestoreStats struct {
	// Path is where the disk was written: the path given, with symbolic
	// links followed, or DIR/DISK.img for a directory.
	Path          string `json:"path"`
	Size          int64  `json:"size"`
	WrittenBytes  int64  `json:"written_bytes"`  // data written to the target
	ZeroBytes     int64  `json:"zero_bytes"`     // zero blocks: holes in files, zeros on devices
	BlocksRead    int64  `json:"blocks_read"`    // target blocks read to compare (incremental)
	BlocksWritten int64  `json:"blocks_written"` // blocks written (data or zeros, or holes punched)
	BlocksSkipped int64  `json:"blocks_skipped"` // blocks left as they were
}

// RestoreDisk writes disk opts.Disk of restore point opts.Point (an ID, a
// unique prefix, or Latest: the newest point that has the disk) to
// opts.Path, bit-exact. A new regular file is written under a temporary name beside
// path and renamed into place when complete, so a failed restore never
// leaves a half-written file at path; zero blocks become holes. See
// RestoreOptions.Sync for durability. A block device must be at least the
// disk's size and is written in place, zeros included.
//
// A restore never destroys silently: an existing file or device at path is
// refused (ErrExists) unless opts.Overwrite, or opts.Incremental, which
// updates the existing target in place (see RestoreOptions). A symbolic
// link at path is followed: the file or device it points to is written,
// and the link stays. A replaced file keeps its permissions. If path is a
// directory, the disk is restored to the file DISK.img in it.
//
// Every chunk is checked against its hash: a damaged one fails the restore
// with an error wrapping ErrCorrupt that names it.
func (c *Collection) RestoreDisk(ctx context.Context, opts RestoreOptions) (RestoreStats, error) {
	id, disk, path := opts.Point, opts.Disk, opts.Path
	if id == "" || disk == "" || path == "" {
		return RestoreStats{}, fmt.Errorf("restore from %q: RestoreOptions.Point, Disk and Path are required (got %q, %q, %q)", c.name, id, disk, path)
	}
	if opts.From != "" && !opts.Incremental {
		return RestoreStats{}, fmt.Errorf("restore: From needs Incremental")
	}
	ids := []string{id}
	if opts.From != "" {
		ids = append(ids, opts.From)
	}
	// A reader lock keeps what the restore reads from GCs in any process.
	points, lock, err := c.lockPointsWithDisk(ctx, "restore disk "+disk, disk, ids...)
	if err != nil {
		return RestoreStats{}, err
	}
	defer lock.Close()
	ctx = lock.Context()
	to, err := diskIn(c, points[0], disk)
	if err != nil {
		return RestoreStats{}, err
	}
	plan := restorePlan{disk: to.disk}
	if opts.From != "" {
		from, err := diskIn(c, points[1], disk)
		if err != nil {
			return RestoreStats{}, fmt.Errorf("restore from: %w", err)
		}
		if from.disk.Size != to.disk.Size {
			return RestoreStats{}, fmt.Errorf("restore %s from %s: the disk was %d bytes and is %d: restore incrementally without From", to.point, from.point, from.disk.Size, to.disk.Size)
		}
		if plan.only, err = c.repo.chain.DiffTrees(ctx, from.disk, to.disk); err != nil {
			return RestoreStats{}, err
		}
		plan.fromKnown = true
	}
	if path, err = targetPath(path, disk); err != nil {
		return RestoreStats{}, err
	}
	var t *target
	if opts.Incremental {
		t, err = openExistingTarget(path, to.disk.Size, plan.fromKnown)
	} else {
		t, err = openTarget(path, to.disk.Size, opts.Overwrite)
	}
	if err != nil {
		return RestoreStats{}, err
	}
	plan.compare = opts.Incremental && !plan.fromKnown
	plan.holdsData = opts.Incremental || t.blockDevice
	stats, err := c.restoreTo(ctx, plan, t, opts)
	stats.Path = path
	if err == nil {
		err = t.commit(opts.Sync)
	}
	if err != nil {
		t.abort()
		if lost := lock.Err(); lost != nil {
			err = lost // why the reads were cancelled
		}
		return stats, fmt.Errorf("restore %s/%s disk %q to %s: %w", c.name, to.point, disk, path, err)
	}
	return stats, nil
}

// restorePlan says which blocks to write and how.
type restorePlan struct {
	disk chain.DiskManifest
	// only, when fromKnown, lists the blocks that differ from the target.
	only      []chain.BlockRange
	fromKnown bool
	// compare: read each target block and write only if it differs.
	compare bool
	// holdsData: the target may hold non-zero data where the disk has
	// zeros, so zero blocks must be written (or punched), not skipped.
	holdsData bool
}

// wants reports whether any of the n blocks from first are to be written.
func (p *restorePlan) wants(first int64, n int) bool {
	if !p.fromKnown {
		return true
	}
	i := sort.Search(len(p.only), func(i int) bool { return p.only[i].First+p.only[i].Count > first })
	return i < len(p.only) && p.only[i].First < first+int64(n)
}

// target is where a restore writes.
type target struct {
	path        string
	file        *os.File
	blockDevice bool
	tempPath    string // for new files: written here, renamed to path at commit
}

func isBlockDevice(fi os.FileInfo) bool {
	return fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0
}

// targetPath returns the path a restore of disk to path writes: symbolic
// links followed to the file or device they point to (which need not exist
// yet), and DIR/DISK.img for a directory.
func targetPath(path, disk string) (string, error) {
	resolved, err := followLinks(path)
	if err != nil {
		return "", err
	}
	if fi, err := os.Stat(resolved); err == nil && fi.IsDir() {
		return followLinks(filepath.Join(resolved, disk+".img"))
	}
	return resolved, nil
}

// maxLinks is how many symbolic links targetPath follows, as Linux's
// path lookup does (ELOOP).
const maxLinks = 40

// followLinks follows symbolic links from path until it reaches something
// else, or nothing.
func followLinks(path string) (string, error) {
	p := path
	for range maxLinks {
		fi, err := os.Lstat(p)
		if errors.Is(err, os.ErrNotExist) {
			return p, nil // a new file, or a dangling link's target
		}
		if err != nil {
			return "", fmt.Errorf("restore target %s: %w", path, err)
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			return p, nil
		}
		link, err := os.Readlink(p)
		if err != nil {
			return "", fmt.Errorf("restore target %s: %w", path, err)
		}
		if !filepath.IsAbs(link) {
			link = filepath.Join(filepath.Dir(p), link)
		}
		p = link
	}
	return "", fmt.Errorf("restore target %s: more than %d symbolic links", path, maxLinks)
}

// openTarget opens a target to restore into from scratch: a block device
// in place, or a new file beside path. An existing target needs overwrite.
func openTarget(path string, size int64, overwrite bool) (*target, error) {
	fi, err := os.Stat(path)
	switch {
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("restore target %s: %w", path, err)
	case err == nil && !isBlockDevice(fi) && !fi.Mode().IsRegular():
		return nil, fmt.Errorf("restore target %s: not a regular file or block device", path)
	case err == nil && !overwrite:
		return nil, fmt.Errorf("restore target %s: %w (RestoreOptions.Overwrite replaces it)", path, ErrExists)
	case err == nil && isBlockDevice(fi):
		return openDevice(path, size)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".restoring-*")
	if err != nil {
		return nil, fmt.Errorf("restore target %s: %w", path, err)
	}
	if fi != nil {
		err = keepOwnerAndMode(f, fi)
	}
	if err == nil {
		err = f.Truncate(size)
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("restore target %s: %w", path, err)
	}
	return &target{path: path, file: f, tempPath: f.Name()}, nil
}

// keepOwnerAndMode gives the file that replaces old old's permissions and,
// where the process may (as root), its owner.
func keepOwnerAndMode(f *os.File, old os.FileInfo) error {
	if st, ok := old.Sys().(*syscall.Stat_t); ok && (int(st.Uid) != os.Geteuid() || int(st.Gid) != os.Getegid()) {
		// Only root may give a file away; others get the file as cp makes it.
		if err := f.Chown(int(st.Uid), int(st.Gid)); err != nil && !errors.Is(err, os.ErrPermission) {
			return err
		}
	}
	return f.Chmod(old.Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky))
}

// openExistingTarget opens a target to update in place. A regular file is
// resized to the disk's size, unless the caller vouches that it holds a
// restore point of the same size.
func openExistingTarget(path string, size int64, sizeKnown bool) (*target, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("incremental restore needs an existing target: %w", err)
	}
	if isBlockDevice(fi) {
		return openDevice(path, size)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("restore target %s: not a regular file or block device", path)
	}
	if sizeKnown && fi.Size() != size {
		return nil, fmt.Errorf("restore target %s is %d bytes, but the restore point it is said to hold has %d", path, fi.Size(), size)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("restore target %s: %w", path, err)
	}
	if fi.Size() != size {
		if err := f.Truncate(size); err != nil {
			f.Close()
			return nil, fmt.Errorf("restore target %s: %w", path, err)
		}
	}
	return &target{path: path, file: f}, nil
}

func openDevice(path string, size int64) (*target, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("restore target %s: %w", path, err)
	}
	devSize, err := f.Seek(0, 2)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("restore target %s: size: %w", path, err)
	}
	if devSize < size {
		f.Close()
		return nil, fmt.Errorf("restore target %s: device of %d bytes is smaller than the disk's %d", path, devSize, size)
	}
	return &target{path: path, file: f, blockDevice: true}, nil
}

// writeZeros makes [off, off+n) zero: a hole in a file, zeros on a device.
func (t *target) writeZeros(off int64, n int, zero []byte) error {
	if !t.blockDevice {
		err := unix.Fallocate(int(t.file.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, int64(n))
		if err == nil {
			return nil
		}
		// No hole punching here: write the zeros.
	}
	_, err := t.file.WriteAt(zero[:n], off)
	return err
}

// writeBlocks writes consecutive blocks, held apart in memory, at off with
// as few pwritev calls as it takes.
func (t *target) writeBlocks(off int64, blocks [][]byte) error {
	rc, err := t.file.SyscallConn()
	if err != nil {
		return err
	}
	for len(blocks) > 0 {
		var n int
		var werr error
		if err := rc.Write(func(fd uintptr) bool {
			n, werr = unix.Pwritev(int(fd), blocks[:min(len(blocks), maxIOVecs)], off)
			return werr != unix.EAGAIN
		}); err != nil {
			return err
		}
		if werr == unix.EINTR {
			continue
		}
		if werr != nil {
			return fmt.Errorf("write %s at %d: %w", t.path, off, werr)
		}
		if n == 0 {
			return fmt.Errorf("write %s at %d: %w", t.path, off, io.ErrShortWrite)
		}
		off += int64(n)
		for n > 0 { // skip what was written, which may end mid-block
			if n < len(blocks[0]) {
				blocks[0] = blocks[0][n:]
				break
			}
			n -= len(blocks[0])
			blocks = blocks[1:]
		}
	}
	return nil
}

// maxIOVecs is Linux's IOV_MAX: the most buffers one pwritev takes.
const maxIOVecs = 1024

// commit finishes the target: a new file is renamed into place (after an
// fsync of file and directory when durable).
func (t *target) commit(durable bool) error {
	if durable {
		if err := t.file.Sync(); err != nil {
			return err
		}
	}
	if err := t.file.Close(); err != nil {
		return err
	}
	if t.tempPath == "" {
		return nil
	}
	if err := os.Rename(t.tempPath, t.path); err != nil {
		return err
	}
	t.tempPath = ""
	if !durable {
		return nil
	}
	d, err := os.Open(filepath.Dir(t.path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (t *target) abort() {
	t.file.Close()
	if t.tempPath != "" {
		os.Remove(t.tempPath)
	}
}

// maxGather bounds the buffer a restore worker gathers a leaf's blocks in.
const maxGather = 16 << 20

// restoreTo writes the blocks the plan wants: in the order of the packs
// that hold them (restoreInPackOrder), or, when each target block is to be
// compared first, leaf by leaf, workers fetching, verifying and writing
// each leaf's blocks, out of order.
func (c *Collection) restoreTo(ctx context.Context, plan restorePlan, t *target, opts RestoreOptions) (RestoreStats, error) {
	stats := RestoreStats{Size: plan.disk.Size}
	tree := c.repo.chain.OpenTree(plan.disk)
	g := tree.Geometry()
	workers := opts.Workers
	if workers <= 0 {
		workers = 2 * runtime.GOMAXPROCS(0)
	}
	type leaf struct {
		index int64
		ids   []chain.ID
	}
	if !plan.compare {
		return c.restoreInPackOrder(ctx, plan, t, tree, workers, serialize(opts.Progress))
	}
	leaves := make(chan leaf, workers)
	var written, zeros, read, wrote, skipped, done atomic.Int64
	progress := serialize(opts.Progress)
	eg, ectx := errgroup.WithContext(ctx)
	eg.Go(func() error {
		defer close(leaves)
		for j := int64(0); j < g.Leaves(); j++ {
			first := j * int64(g.Fanout)
			if !plan.wants(first, g.LeafBlocks(j)) {
				skipped.Add(int64(g.LeafBlocks(j)))
				if progress != nil {
					progress(done.Add(g.LeafBytes(j)), plan.disk.Size)
				}
				continue
			}
			ids, err := tree.Leaf(ectx, j, nil)
			if err != nil {
				return err
			}
			select {
			case leaves <- leaf{j, ids}:
			case <-ectx.Done():
				return ectx.Err()
			}
		}
		return nil
	})
	zeroBlock := make([]byte, plan.disk.BlockSize)
	for range workers {
		eg.Go(func() error {
			var current []byte
			// A slot per block, with room for the decoder's slack.
			stride := int64(plan.disk.BlockSize) + chain.DecodeSlack
			slots := min(int64(g.Fanout), maxGather/int64(plan.disk.BlockSize))
			leafBuf := make([]byte, slots*stride)
			var iovs [][]byte
			if plan.compare {
				current = make([]byte, plan.disk.BlockSize)
			}
			for l := range leaves {
				first := l.index * int64(g.Fanout)
				// Decide per block; fetch the ones to write in one batch.
				fetch := make([]chain.ID, len(l.ids))
				for i, id := range l.ids {
					block := first + int64(i)
					off := block * int64(plan.disk.BlockSize)
					n := g.BlockLength(block)
					if !plan.wants(block, 1) {
						skipped.Add(1)
						continue
					}
					if plan.compare {
						if _, err := t.file.ReadAt(current[:n], off); err != nil {
							return fmt.Errorf("read target at %d: %w", off, err)
						}
						read.Add(1)
						if blockdiff.BlockID(current[:n], c.repo.chain.HashBlob) == id {
							skipped.Add(1)
							continue
						}
					}
					if id.IsZero() {
						zeros.Add(int64(n))
						if plan.holdsData {
							if err := t.writeZeros(off, n, zeroBlock); err != nil {
								return fmt.Errorf("write zeros at %d: %w", off, err)
							}
							wrote.Add(1)
						}
						continue
					}
					fetch[i] = id
				}
				// Gather the leaf's blocks in a buffer and write each run of
				// consecutive blocks with one call: far fewer, larger writes
				// (and inode-lock round trips) than a write per block.
				leafOff := first * int64(plan.disk.BlockSize)
				gather := int64(len(l.ids)) <= slots
				slot := func(i int) []byte {
					at := int64(i) * stride
					return leafBuf[at : at+int64(g.BlockLength(first+int64(i)))]
				}
				var into func(i int) []byte
				if gather { // decode each block straight into its slot
					into = func(i int) []byte { return slot(i)[:0:stride] }
				}
				err := c.repo.chain.ReadBlobs(ectx, chain.DataBlob, fetch, into, func(i int, data []byte) error {
					block := first + int64(i)
					if n := g.BlockLength(block); len(data) != n {
						return &chain.CorruptError{Object: "data blob " + fetch[i].String(), Reason: fmt.Sprintf("%d bytes where block %d has %d", len(data), block, n)}
					}
					if !gather {
						if _, err := t.file.WriteAt(data, block*int64(plan.disk.BlockSize)); err != nil {
							return err
						}
					}
					written.Add(int64(len(data)))
					wrote.Add(1)
					return nil
				})
				if err != nil {
					return fmt.Errorf("leaf %d: %w", l.index, err)
				}
				for i := 0; gather && i < len(fetch); {
					if fetch[i].IsZero() {
						i++
						continue
					}
					j := i + 1
					for j < len(fetch) && !fetch[j].IsZero() {
						j++
					}
					iovs = iovs[:0]
					for k := i; k < j; k++ {
						iovs = append(iovs, slot(k))
					}
					if err := t.writeBlocks(leafOff+int64(i)*int64(plan.disk.BlockSize), iovs); err != nil {
						return err
					}
					i = j
				}
				if progress != nil {
					progress(done.Add(g.LeafBytes(l.index)), plan.disk.Size)
				}
			}
			return nil
		})
	}
	err := eg.Wait()
	stats.WrittenBytes, stats.ZeroBytes = written.Load(), zeros.Load()
	stats.BlocksRead, stats.BlocksWritten, stats.BlocksSkipped = read.Load(), wrote.Load(), skipped.Load()
	return stats, err
}

// serialize wraps a progress callback so that concurrent workers call it
// one at a time.
func serialize(f func(done, total int64)) func(done, total int64) {
	if f == nil {
		return nil
	}
	var mu sync.Mutex
	return func(done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		f(done, total)
	}
}
