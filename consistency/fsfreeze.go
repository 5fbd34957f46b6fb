package consistency

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Linux's FIFREEZE and FITHAW ioctls: _IOWR('X', 119, int) and _IOWR('X', 120, int).
const (
	ioctlFIFREEZE = 0xc0045877
	ioctlFITHAW   = 0xc0045878
)

// FSFreezeHook freezes the file systems mounted at MountPoints with
// FIFREEZE, which flushes them and blocks every write until FITHAW. It
// needs CAP_SYS_ADMIN (root).
type FSFreezeHook struct {
	MountPoints []string

	mu     sync.Mutex
	frozen []string // what this hook froze, to thaw exactly that
}

var _ Hook = (*FSFreezeHook)(nil)

// Name is "fsfreeze".
func (h *FSFreezeHook) Name() string { return "fsfreeze" }

// Level is FileSystemLevel.
func (h *FSFreezeHook) Level() Level { return FileSystemLevel }

// Ready checks that every path is a mount point: freezing a directory
// would freeze whatever file system holds it, perhaps the root.
func (h *FSFreezeHook) Ready(ctx context.Context, run *Run) error {
	run.Command = "FIFREEZE"
	run.Params = h.MountPoints
	if len(h.MountPoints) == 0 {
		return errors.New("fsfreeze: no mount points")
	}
	for _, mp := range h.MountPoints {
		if err := checkMountPoint(mp); err != nil {
			return fmt.Errorf("fsfreeze: %w", err)
		}
	}
	return nil
}

func checkMountPoint(path string) error {
	var st, parent unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("%s is not a directory", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if abs == "/" {
		return nil
	}
	if err := unix.Stat(filepath.Dir(abs), &parent); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if st.Dev == parent.Dev && st.Ino != parent.Ino {
		return fmt.Errorf("%s is not a mount point", path)
	}
	return nil
}

// Freeze freezes each mount point in turn. If one fails, the ones already
// frozen stay recorded, and Thaw thaws them.
func (h *FSFreezeHook) Freeze(ctx context.Context, run *Run) error {
	run.Command, run.Params = "FIFREEZE", h.MountPoints
	for _, mp := range h.MountPoints {
		if err := ioctlPath(mp, ioctlFIFREEZE); err != nil {
			if errors.Is(err, syscall.EBUSY) {
				return fmt.Errorf("fsfreeze %s: already frozen by someone else: %w", mp, err)
			}
			return fmt.Errorf("fsfreeze %s: %w", mp, err)
		}
		h.mu.Lock()
		h.frozen = append(h.frozen, mp)
		h.mu.Unlock()
	}
	return nil
}

// Thaw thaws what Freeze froze, in reverse order; it tries every one even
// if some fail.
func (h *FSFreezeHook) Thaw(ctx context.Context, run *Run) error {
	h.mu.Lock()
	frozen := h.frozen
	h.frozen = nil
	h.mu.Unlock()
	run.Command, run.Params = "FITHAW", frozen
	var errs []error
	for i := len(frozen) - 1; i >= 0; i-- {
		if err := ioctlPath(frozen[i], ioctlFITHAW); err != nil {
			errs = append(errs, fmt.Errorf("fsthaw %s: %w", frozen[i], err))
		}
	}
	return errors.Join(errs...)
}

func ioctlPath(path string, req uint) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.IoctlSetInt(int(f.Fd()), req, 0)
}
