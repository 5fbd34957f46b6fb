package chain

import (
	"errors"
	"io/fs"
	"syscall"

	"golang.org/x/sys/unix"
)

// readObjectFile reads the whole file at path, as os.ReadFile does, with
// plain system calls: open, fstat, read, close. os.Open first offers every
// file to the runtime's poller (fcntl to make it non-blocking, an
// epoll_ctl that a regular file refuses, fcntl again), which costs more
// than reading a manifest of 1 KiB does; a listing reads thousands of
// them. Errors are *fs.PathError wrapping the errno, as os.ReadFile's are,
// so notFoundOr reads them alike (a directory is EISDIR).
func readObjectFile(path string) ([]byte, error) {
	var fd int
	err := retryEINTR(func() (err error) {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := retryEINTR(func() error { return unix.Fstat(fd, &st) }); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return nil, &fs.PathError{Op: "read", Path: path, Err: syscall.EISDIR}
	}
	// One byte more than the size, so that the read that finds the end
	// needs no second buffer; an object is never changed in place, but
	// the loop copes with a file that grew.
	data := make([]byte, 0, max(st.Size, 0)+1)
	for {
		if len(data) == cap(data) {
			data = append(data, 0)[:len(data)]
		}
		var n int
		err := retryEINTR(func() (err error) {
			n, err = unix.Read(fd, data[len(data):cap(data)])
			return err
		})
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return data, nil
		}
		data = data[:len(data)+n]
	}
}

// retryEINTR calls fn until it does not fail with EINTR.
func retryEINTR(fn func() error) error {
	for {
		if err := fn(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
