package snapshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"sync"
	"time"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// MountOptions configure Mount.
type MountOptions struct {
	// Logger gets a record of every read that fails (a damaged chunk's
	// record names the object) and of the lock being lost. nil means the
	// repository's logger.
	Logger *slog.Logger
	// OnError, if set, is called with the error of every read that fails;
	// the reader gets EIO for that read alone.
	OnError func(error)
	// CacheBytes bounds each open disk's cache of blocks; 0 means 64 MiB.
	CacheBytes int64
	// ReadAheadBytes is how far ahead of a sequential reader a disk's
	// blocks are read; 0 means 16 MiB, negative turns read-ahead off.
	ReadAheadBytes int64
	// AllowOther lets users other than the one who mounts read the file
	// system (FUSE's allow_other; for users other than root it needs
	// user_allow_other in /etc/fuse.conf).
	AllowOther bool
}

// Mounted is a repository mounted by Mount. Unmount it when done; it also
// ends when it is unmounted from outside (fusermount -u, umount).
type Mounted struct {
	dir    string
	server *fuse.Server
	state  *mountState
	done   chan struct{}
	points int
}

// Mount mounts the restore points of repo, read-only, on the directory
// mountpoint, as a FUSE file system:
//
//	MOUNTPOINT/COLLECTION/POINT-ID/DISK.img   each disk, as a file of its exact size
//	MOUNTPOINT/COLLECTION/POINT-ID/vm-config  the VM configuration, if one was stored
//	MOUNTPOINT/COLLECTION/latest -> POINT-ID  the collection's newest restore point
//
// Files and directories carry the restore point's creation time. A disk
// image reads through a DiskReader: hash-checked, cached, read ahead for
// sequential readers, with its zero blocks reported as holes (SEEK_DATA,
// SEEK_HOLE), so sparse copies skip them. A read of a damaged chunk fails
// with EIO and is reported to opts.Logger and opts.OnError; the rest of
// the disk still reads.
//
// The file system shows the restore points there are when it is mounted.
// It holds a reader lock on all of them until it is unmounted, so a GC in
// any process keeps what it shows, even of points deleted meanwhile. ctx
// bounds the mounting, not the mount.
func Mount(ctx context.Context, repo *Repository, mountpoint string, opts MountOptions) (*Mounted, error) {
	points, lock, err := lockAllPoints(ctx, repo, "mount "+mountpoint)
	if err != nil {
		return nil, err
	}
	logger := opts.Logger
	if logger == nil {
		logger = repo.chain.Logger()
	}
	state := &mountState{repo: repo, lock: lock, opts: opts, logger: logger, mounted: time.Now()}
	root := &rootNode{state: state, points: points}
	// go-fuse's own warnings go to the logger, not to the log package's default.
	fuseLog := slog.NewLogLogger(logger.Handler(), slog.LevelWarn)
	server, err := fs.Mount(mountpoint, root, &fs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther:   opts.AllowOther,
			FsName:       "diskpoint",
			Name:         "diskpoint",
			DirectMount:  true, // as root, mount(2) itself; else fusermount3
			MaxReadAhead: 128 << 10,
			Options:      []string{"ro", "default_permissions"},
			Logger:       fuseLog,
		},
		// Nothing changes while mounted: the kernel may cache names and
		// attributes for as long as it likes.
		EntryTimeout: ptr(time.Hour),
		AttrTimeout:  ptr(time.Hour),
		Logger:       fuseLog,
	})
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	m := &Mounted{dir: mountpoint, server: server, state: state, done: make(chan struct{})}
	for _, ps := range points {
		m.points += len(ps)
	}
	go func() {
		server.Wait() // unmounted, by Unmount or from outside
		state.close()
		close(m.done)
	}()
	return m, nil
}

func ptr[T any](v T) *T { return &v }

// Dir is where the file system is mounted.
func (m *Mounted) Dir() string { return m.dir }

// Points is the number of restore points the file system shows.
func (m *Mounted) Points() int { return m.points }

// Unmount unmounts the file system and releases its reader lock. It fails,
// leaving the file system mounted, while a file in it is open or a process
// has its working directory there (EBUSY); Detach then unmounts lazily.
func (m *Mounted) Unmount() error {
	select {
	case <-m.done:
		return nil // unmounted from outside already
	default:
	}
	if err := m.server.Unmount(); err != nil {
		return fmt.Errorf("unmount %s: %w", m.dir, err)
	}
	<-m.done
	return nil
}

// Detach unmounts the file system lazily: it leaves the directory tree
// now, and ends (releasing its reader lock, and Wait returning) when the
// last file open in it is closed.
func (m *Mounted) Detach() error {
	select {
	case <-m.done:
		return nil
	default:
	}
	err := unix.Unmount(m.dir, unix.MNT_DETACH)
	if errors.Is(err, unix.EPERM) { // not root: fusermount may
		for _, bin := range []string{"fusermount3", "fusermount"} {
			if path, lookErr := exec.LookPath(bin); lookErr == nil {
				out, runErr := exec.Command(path, "-u", "-z", m.dir).CombinedOutput()
				if runErr != nil {
					return fmt.Errorf("detach %s: %s: %w", m.dir, out, runErr)
				}
				return nil
			}
		}
	}
	if err != nil {
		return fmt.Errorf("detach %s: %w", m.dir, err)
	}
	return nil
}

// Wait returns when the file system is unmounted, by Unmount, Detach or
// from outside (fusermount -u, umount), and its reader lock released.
func (m *Mounted) Wait() { <-m.done }

// Done is closed when the file system is unmounted.
func (m *Mounted) Done() <-chan struct{} { return m.done }

// lockAllPoints takes one reader lock on every restore point of repo, by
// the open protocol of chain/FORMAT.md's safety model: list the manifests,
// take the lock with their roots, read each again. Points deleted in
// between are left out: a GC may have swept them before the lock was
// visible. It returns the points by collection, oldest first.
func lockAllPoints(ctx context.Context, repo *Repository, operation string) (map[string][]*RestorePoint, *chain.ReaderLock, error) {
	names, err := repo.Collections(ctx)
	if err != nil {
		return nil, nil, err
	}
	listed := map[string][]*RestorePoint{}
	var roots []chain.ID
	for _, name := range names {
		c, err := repo.Collection(name)
		if err != nil {
			return nil, nil, err
		}
		points, err := c.List(ctx)
		if err != nil {
			return nil, nil, err
		}
		listed[name] = points
		for _, rp := range points {
			roots = append(roots, rp.roots()...)
		}
	}
	// The lock outlives ctx: it lasts as long as the mount.
	lock, err := repo.chain.OpenReader(context.WithoutCancel(ctx), operation, roots)
	if err != nil {
		return nil, nil, err
	}
	kept := map[string][]*RestorePoint{}
	for name, points := range listed {
		for _, rp := range points {
			_, err := repo.chain.LoadManifest(ctx, name, rp.ID)
			if errors.Is(err, ErrNotFound) {
				continue // deleted while being opened
			}
			if err != nil {
				lock.Close()
				return nil, nil, err
			}
			kept[name] = append(kept[name], rp)
		}
	}
	return kept, lock, nil
}

// mountState is what the nodes of one mount share.
type mountState struct {
	repo    *Repository
	lock    *chain.ReaderLock
	opts    MountOptions
	logger  *slog.Logger
	mounted time.Time

	mu       sync.Mutex
	lockLost bool // reported once
}

// readFailed reports a read's failure where the options say.
func (s *mountState) readFailed(err error) {
	if lost := s.lock.Err(); lost != nil {
		s.mu.Lock()
		first := !s.lockLost
		s.lockLost = true
		s.mu.Unlock()
		if first {
			s.logger.Error("the mount's reader lock is lost: GCs may no longer keep what it shows, so reads fail", "error", lost)
		}
	}
	s.logger.Error("read failed", "error", err)
	if s.opts.OnError != nil {
		s.opts.OnError(err)
	}
}

// close releases the lock once the file system is unmounted.
func (s *mountState) close() {
	if err := s.lock.Close(); err != nil {
		s.logger.Error("releasing the mount's reader lock", "error", err)
	}
}
