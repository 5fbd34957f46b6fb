package main

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// loopDevice is a read-only loop device over part of a file: how diskpoint
// files hands a partition of a disk image to the kernel's file system
// drivers. One device per partition at its offset, because partition
// scanning (losetup -P) needs the kernel's partition parsers, which not
// every kernel has.
type loopDevice struct {
	path string
	dev  *os.File
}

// attachLoop attaches a read-only loop device to size bytes of file at
// offset. The device clears itself when the last user lets go (autoclear),
// so a crash leaves no attached device once its mount is gone.
func attachLoop(file string, offset, size int64) (*loopDevice, error) {
	control, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("loop devices: %w", err)
	}
	defer control.Close()
	backing, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer backing.Close() // the device holds its own reference
	config := unix.LoopConfig{
		Fd: uint32(backing.Fd()),
		Info: unix.LoopInfo64{
			Offset:    uint64(offset),
			Sizelimit: uint64(size),
			Flags:     unix.LO_FLAGS_READ_ONLY | unix.LO_FLAGS_AUTOCLEAR,
		},
	}
	copy(config.Info.File_name[:unix.LO_NAME_SIZE-1], file)
	// Another process may take the free device first: then ask again.
	for range 16 {
		n, err := unix.IoctlRetInt(int(control.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("find a free loop device: %w", err)
		}
		path := fmt.Sprintf("/dev/loop%d", n)
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) { // no devtmpfs to make the node
			if err := unix.Mknod(path, unix.S_IFBLK|0o600, int(unix.Mkdev(7, uint32(n)))); err != nil {
				return nil, fmt.Errorf("create %s: %w", path, err)
			}
		}
		dev, err := os.OpenFile(path, os.O_RDONLY, 0)
		if err != nil {
			return nil, err
		}
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &config)
		if errors.Is(err, unix.EBUSY) {
			dev.Close()
			continue
		}
		if err != nil {
			dev.Close()
			return nil, fmt.Errorf("attach %s to %s: %w", path, file, err)
		}
		return &loopDevice{path: path, dev: dev}, nil
	}
	return nil, errors.New("attach a loop device: every free one was taken by others first")
}

// detach detaches the device (at once if nothing else has it open, else
// when the last user closes it).
func (l *loopDevice) detach() error {
	err := unix.IoctlSetInt(int(l.dev.Fd()), unix.LOOP_CLR_FD, 0)
	if errors.Is(err, unix.ENXIO) { // cleared already
		err = nil
	}
	if closeErr := l.dev.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return fmt.Errorf("detach %s: %w", l.path, err)
	}
	return nil
}
