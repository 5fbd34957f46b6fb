package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// The nodes of a mounted repository (see Mount). The tree is built whole
// when it is mounted, from the restore points locked then; the disks'
// readers are opened when a disk image is first opened.

const (
	dirMode  = 0o555
	fileMode = 0o444
	// vmConfigName is the file holding a restore point's VM configuration.
	vmConfigName = "vm-config"
	// diskImageSuffix follows a disk's name in its image's.
	diskImageSuffix = ".img"
)

// rootNode is the mount point: a directory per collection.
type rootNode struct {
	fs.Inode
	state  *mountState
	points map[string][]*RestorePoint
}

var (
	_ fs.NodeOnAdder   = (*rootNode)(nil)
	_ fs.NodeGetattrer = (*rootNode)(nil)
)

// OnAdd builds the whole tree under the root.
func (n *rootNode) OnAdd(ctx context.Context) {
	dir := fs.StableAttr{Mode: syscall.S_IFDIR}
	for _, name := range slices.Sorted(maps.Keys(n.points)) {
		points := n.points[name]
		c := &Collection{repo: n.state.repo, name: name}
		newest := n.state.mounted
		if len(points) > 0 {
			newest = points[len(points)-1].Created
		}
		collection := n.NewPersistentInode(ctx, &dirNode{time: newest}, dir)
		n.AddChild(name, collection, false)
		for _, rp := range points {
			point := n.NewPersistentInode(ctx, &dirNode{time: rp.Created}, dir)
			collection.AddChild(rp.ID, point, false)
			for _, d := range rp.Disks {
				disk := &diskNode{state: n.state, c: c, rp: rp, disk: d}
				point.AddChild(d.Name+diskImageSuffix, n.NewPersistentInode(ctx, disk, fs.StableAttr{Mode: syscall.S_IFREG}), false)
			}
			if !rp.Config.IsZero() {
				config := &configNode{state: n.state, c: c, rp: rp}
				point.AddChild(vmConfigName, n.NewPersistentInode(ctx, config, fs.StableAttr{Mode: syscall.S_IFREG}), false)
			}
		}
		if len(points) > 0 {
			latest := &fs.MemSymlink{Data: []byte(points[len(points)-1].ID)}
			setTimes(&latest.Attr, newest)
			latest.Attr.Mode = 0o777
			collection.AddChild(Latest, n.NewPersistentInode(ctx, latest, fs.StableAttr{Mode: syscall.S_IFLNK}), false)
		}
	}
}

// Getattr: the root carries the time it was mounted.
func (n *rootNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = dirMode
	setTimes(&out.Attr, n.state.mounted)
	return 0
}

// dirNode is a collection's directory or a restore point's.
type dirNode struct {
	fs.Inode
	time time.Time
}

var _ fs.NodeGetattrer = (*dirNode)(nil)

// Getattr: a point's directory carries the point's time, a collection's
// its newest point's.
func (n *dirNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = dirMode
	setTimes(&out.Attr, n.time)
	return 0
}

func setTimes(a *fuse.Attr, t time.Time) {
	a.SetTimes(&t, &t, &t)
}

// diskNode is DISK.img: one disk of one restore point.
type diskNode struct {
	fs.Inode
	state *mountState
	c     *Collection
	rp    *RestorePoint
	disk  CapturedDisk

	mu     sync.Mutex
	opens  int // open handles; the reader and its cache go with the last
	reader *DiskReader
	ahead  *readAhead
	cancel context.CancelFunc // ends the reads ahead
}

var (
	_ fs.NodeGetattrer = (*diskNode)(nil)
	_ fs.NodeOpener    = (*diskNode)(nil)
)

// name is how errors name the image.
func (n *diskNode) name() string {
	return n.c.name + "/" + n.rp.ID + "/" + n.disk.Name + diskImageSuffix
}

// Getattr: the disk's exact size, the point's time. Blocks is the size,
// not what is stored: holes are found by SEEK_HOLE.
func (n *diskNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = fileMode
	out.Size = uint64(n.disk.Size)
	out.Blocks = (out.Size + 511) / 512
	out.Blksize = uint32(n.disk.BlockSize)
	setTimes(&out.Attr, n.rp.Created)
	return 0
}

// Open opens the image for reading; the first open opens its reader.
func (n *diskNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 {
		return nil, 0, syscall.EROFS
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.opens == 0 {
		d := &pointDisk{point: n.rp.ID, disk: n.disk.manifest()}
		n.reader = newDiskReader(n.c, d, n.state.lock, ReaderOptions{CacheBytes: n.state.opts.CacheBytes})
		var aheadCtx context.Context
		aheadCtx, n.cancel = context.WithCancel(n.state.lock.Context())
		n.ahead = newReadAhead(aheadCtx, n.reader, n.state.opts.ReadAheadBytes)
	}
	n.opens++
	// The image never changes: the kernel may keep its pages across opens.
	return &diskHandle{node: n, reader: n.reader, stream: n.ahead.newStream()}, fuse.FOPEN_KEEP_CACHE, 0
}

// release closes the reader when the last handle goes.
func (n *diskNode) release() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.opens--
	if n.opens > 0 {
		return
	}
	n.cancel()
	n.ahead.wait()
	n.reader.Close() // the mount's lock stays
	n.reader, n.ahead = nil, nil
}

// diskHandle is one open DISK.img.
type diskHandle struct {
	node   *diskNode
	reader *DiskReader
	stream *readStream
}

var (
	_ fs.FileReader   = (*diskHandle)(nil)
	_ fs.FileLseeker  = (*diskHandle)(nil)
	_ fs.FileReleaser = (*diskHandle)(nil)
)

// Read reads the image. A failure (a damaged chunk) fails this read alone
// with EIO, and is reported; a short read is never returned for it, since
// the kernel would take a short read for the end of the file.
func (h *diskHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, err := h.stream.ReadAt(ctx, dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, h.fail(ctx, fmt.Errorf("read %s at %d: %w", h.node.name(), off, err))
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// Lseek answers SEEK_DATA and SEEK_HOLE from the block map: zero blocks
// are holes.
func (h *diskHandle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	size := uint64(h.node.disk.Size)
	if off >= size {
		return 0, syscall.ENXIO
	}
	switch whence {
	case unix.SEEK_DATA:
		pos, ok, err := h.reader.SeekData(ctx, int64(off))
		if err != nil {
			return 0, h.fail(ctx, fmt.Errorf("seek data in %s from %d: %w", h.node.name(), off, err))
		}
		if !ok {
			return 0, syscall.ENXIO
		}
		return uint64(pos), 0
	case unix.SEEK_HOLE:
		pos, err := h.reader.SeekHole(ctx, int64(off))
		if err != nil {
			return 0, h.fail(ctx, fmt.Errorf("seek hole in %s from %d: %w", h.node.name(), off, err))
		}
		return uint64(pos), 0
	}
	return 0, syscall.EINVAL
}

// Release lets the node close its reader after the last handle.
func (h *diskHandle) Release(ctx context.Context) syscall.Errno {
	h.node.release()
	return 0
}

// fail reports err and returns the errno the reader gets: EINTR if the
// read was interrupted (nothing failed), else EIO.
func (h *diskHandle) fail(ctx context.Context, err error) syscall.Errno {
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return syscall.EINTR
	}
	h.node.state.readFailed(err)
	return syscall.EIO
}

// configNode is vm-config: the VM configuration stored with a point,
// read when first asked for.
type configNode struct {
	fs.Inode
	state *mountState
	c     *Collection
	rp    *RestorePoint

	mu   sync.Mutex
	data []byte
}

var (
	_ fs.NodeGetattrer = (*configNode)(nil)
	_ fs.NodeOpener    = (*configNode)(nil)
	_ fs.NodeReader    = (*configNode)(nil)
)

// load reads the configuration once.
func (n *configNode) load(ctx context.Context) ([]byte, syscall.Errno) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.data != nil {
		return n.data, 0
	}
	data, err := n.c.VMConfig(ctx, n.rp)
	if err == nil {
		err = n.state.lock.Err()
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, syscall.EINTR
		}
		n.state.readFailed(err)
		return nil, syscall.EIO
	}
	n.data = data
	return data, 0
}

// Getattr: the configuration's size (as the manifest records it, else
// read), the point's time.
func (n *configNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = fileMode
	size := n.rp.ConfigSize
	if size == 0 { // a manifest from before the size was recorded
		data, errno := n.load(ctx)
		if errno != 0 {
			return errno
		}
		size = int64(len(data))
	}
	out.Size = uint64(size)
	setTimes(&out.Attr, n.rp.Created)
	return 0
}

// Open reads the configuration, so that a damaged one fails the open.
func (n *configNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 {
		return nil, 0, syscall.EROFS
	}
	if _, errno := n.load(ctx); errno != 0 {
		return nil, 0, errno
	}
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

// Read reads the configuration.
func (n *configNode) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	data, errno := n.load(ctx)
	if errno != 0 {
		return nil, errno
	}
	off = min(off, int64(len(data)))
	return fuse.ReadResultData(data[off:min(off+int64(len(dest)), int64(len(data)))]), 0
}
