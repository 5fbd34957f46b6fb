package qemu

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/diskpoint/diskpoint/internal/systest"
)

// storageDaemon is a qemu-storage-daemon the test started, serving a
// qcow2 node "disk0" over QMP and over NBD (export "w", writable).
type storageDaemon struct {
	image, qmp, nbd string
}

// startDaemon starts qemu-storage-daemon on a new qcow2 of size bytes.
func startDaemon(t *testing.T, size int64) *storageDaemon {
	t.Helper()
	systest.RequireTool(t, "qemu-storage-daemon", "qemu-system-common")
	systest.RequireTool(t, "qemu-img", "qemu-utils")
	dir := t.TempDir()
	d := &storageDaemon{image: filepath.Join(dir, "disk.qcow2"), qmp: filepath.Join(dir, "qmp.sock"), nbd: filepath.Join(dir, "nbd.sock")}
	systest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", d.image, strconv.FormatInt(size, 10))
	pid := filepath.Join(dir, "pid")
	// --pidfile is written once the daemon is up, its sockets listening.
	systest.StartDaemon(t, pid, "qemu-storage-daemon",
		"--blockdev", "driver=file,node-name=file0,filename="+d.image,
		"--blockdev", "driver=qcow2,node-name=disk0,file=file0",
		"--nbd-server", "addr.type=unix,addr.path="+d.nbd,
		"--export", "type=nbd,id=w,node-name=disk0,name=w,writable=on",
		"--chardev", "socket,id=qmp0,path="+d.qmp+",server=on,wait=off",
		"--monitor", "chardev=qmp0",
		"--pidfile", pid)
	return d
}

func (d *storageDaemon) client(t *testing.T) *Client {
	t.Helper()
	c, err := Dial(context.Background(), d.qmp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// nbdWriter writes to an NBD export, one write at a time: the smallest
// client that writes (package nbd's client only reads). Old-style option
// NBD_OPT_EXPORT_NAME, simple replies.
type nbdWriter struct {
	conn   net.Conn
	handle uint64
}

func dialNBDWriter(socket, export string) (*nbdWriter, error) {
	conn, err := net.Dial("unix", socket)
	if err != nil {
		return nil, err
	}
	var hello [18]byte
	if _, err := io.ReadFull(conn, hello[:]); err != nil {
		return nil, err
	}
	if string(hello[:16]) != "NBDMAGICIHAVEOPT" || binary.BigEndian.Uint16(hello[16:])&1 == 0 {
		return nil, errors.New("not a fixed-newstyle NBD server")
	}
	noZeroes := binary.BigEndian.Uint16(hello[16:])&2 != 0
	flags := uint32(1)
	if noZeroes {
		flags |= 2
	}
	msg := binary.BigEndian.AppendUint32(nil, flags)
	msg = append(msg, "IHAVEOPT"...)
	msg = binary.BigEndian.AppendUint32(msg, 1) // NBD_OPT_EXPORT_NAME
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(export)))
	msg = append(msg, export...)
	if _, err := conn.Write(msg); err != nil {
		return nil, err
	}
	n := 10
	if !noZeroes {
		n += 124
	}
	if _, err := io.ReadFull(conn, make([]byte, n)); err != nil {
		return nil, fmt.Errorf("export %q: %w", export, err)
	}
	return &nbdWriter{conn: conn}, nil
}

// WriteAt writes p at off and returns once the server acknowledged it.
func (w *nbdWriter) WriteAt(p []byte, off int64) error {
	w.handle++
	req := binary.BigEndian.AppendUint32(nil, 0x25609513)
	req = binary.BigEndian.AppendUint16(req, 0)
	req = binary.BigEndian.AppendUint16(req, 1) // NBD_CMD_WRITE
	req = binary.BigEndian.AppendUint64(req, w.handle)
	req = binary.BigEndian.AppendUint64(req, uint64(off))
	req = binary.BigEndian.AppendUint32(req, uint32(len(p)))
	if _, err := w.conn.Write(append(req, p...)); err != nil {
		return err
	}
	var reply [16]byte
	if _, err := io.ReadFull(w.conn, reply[:]); err != nil {
		return err
	}
	switch {
	case binary.BigEndian.Uint32(reply[:]) != 0x67446698 || binary.BigEndian.Uint64(reply[8:]) != w.handle:
		return errors.New("a reply that is not to this write")
	case binary.BigEndian.Uint32(reply[4:]) != 0:
		return fmt.Errorf("write at %d: NBD error %d", off, binary.BigEndian.Uint32(reply[4:]))
	}
	return nil
}

func (w *nbdWriter) Close() error { return w.conn.Close() }
