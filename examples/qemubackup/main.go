// Command qemubackup backs up a disk of a running QEMU or
// qemu-storage-daemon the way libvirt's pull-mode backup does: a dirty
// bitmap and a copy-before-write fleecing node started in one short
// transaction, the frozen view read over NBD (only the previous bitmap's
// dirty extents, after the first time), and everything torn down.
//
//	go run ./examples/qemubackup -repo /backups -qmp /run/qsd-qmp.sock -nbd /run/qsd-nbd.sock -node disk0
//
// The daemon must serve QMP on -qmp and run an NBD server on -nbd
// (qemu-storage-daemon --nbd-server addr.type=unix,addr.path=PATH, or QMP
// nbd-server-start); -node names the disk's qcow2 node. Without -qmp, it
// starts a qemu-storage-daemon itself on a temporary 64 MiB qcow2 (or the
// qcow2 -image names), writes to it, and takes two restore points: the
// second reads only what changed.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/diskpoint/diskpoint/qemu"
	"github.com/diskpoint/diskpoint/snapshot"
)

func main() {
	repoDir := flag.String("repo", "", "repository directory (created if missing)")
	collection := flag.String("collection", "vm", "collection name")
	disk := flag.String("disk", "os", "disk name in the collection")
	qmpSocket := flag.String("qmp", "", "QMP socket of the running daemon; empty starts one")
	nbdSocket := flag.String("nbd", "", "Unix socket of the daemon's NBD server")
	node := flag.String("node", "disk0", "the disk's qcow2 node name")
	image := flag.String("image", "", "without -qmp: the qcow2 the daemon serves (default: a new temporary one)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Stdout, *repoDir, *collection, *disk, *qmpSocket, *nbdSocket, *node, *image); err != nil {
		fmt.Fprintln(os.Stderr, "qemubackup:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer, repoDir, collection, disk, qmpSocket, nbdSocket, node, image string) error {
	if repoDir == "" {
		return fmt.Errorf("-repo is required")
	}
	repo, err := snapshot.Open(ctx, repoDir)
	if err != nil {
		if repo, err = snapshot.Init(ctx, repoDir, snapshot.InitOptions{}); err != nil {
			return err
		}
	}
	vm, err := repo.Collection(collection)
	if err != nil {
		return err
	}
	backups := 1
	if qmpSocket == "" {
		tmp, err := os.MkdirTemp("", "qemubackup-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		if image == "" {
			image = filepath.Join(tmp, "disk.qcow2")
			if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", image, "64M").CombinedOutput(); err != nil {
				return fmt.Errorf("qemu-img create: %w: %s", err, out)
			}
		}
		qmpSocket, nbdSocket, node = filepath.Join(tmp, "qmp.sock"), filepath.Join(tmp, "nbd.sock"), "disk0"
		daemon := exec.CommandContext(ctx, "qemu-storage-daemon",
			"--blockdev", "driver=file,node-name=file0,filename="+image,
			"--blockdev", "driver=qcow2,node-name=disk0,file=file0",
			"--nbd-server", "addr.type=unix,addr.path="+nbdSocket,
			"--chardev", "socket,id=qmp0,path="+qmpSocket+",server=on,wait=off",
			"--monitor", "chardev=qmp0",
			"--pidfile", filepath.Join(tmp, "pid"))
		daemon.Stderr = os.Stderr
		if err := daemon.Start(); err != nil {
			return fmt.Errorf("qemu-storage-daemon: %w", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- daemon.Wait() }()
		defer func() { daemon.Process.Kill(); <-exited }()
		// --pidfile is written once the daemon is up, sockets listening.
		for {
			if _, err := os.Stat(filepath.Join(tmp, "pid")); err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case err := <-exited:
				exited <- err // for the deferred kill
				return fmt.Errorf("qemu-storage-daemon exited: %v", err)
			case <-time.After(10 * time.Millisecond):
			}
		}
		backups = 2
		fmt.Fprintf(out, "started qemu-storage-daemon on %s\n", image)
	}
	c, err := qemu.Dial(ctx, qmpSocket)
	if err != nil {
		return err
	}
	defer c.Close()
	for i := range backups {
		if i > 0 {
			// Something for the second restore point to find: 1 MiB
			// written through the daemon, as a guest's writes are.
			if err := write(ctx, c, node, nbdSocket); err != nil {
				return err
			}
		}
		rp, _, err := qemu.Backup(ctx, c, vm, qemu.BackupOptions{Disk: disk, Node: node, NBDSocket: nbdSocket})
		if err != nil {
			return err
		}
		d, _ := rp.Disk(disk)
		fmt.Fprintf(out, "restore point %s: disk %s, %d bytes changed, change source %s (read bitmap %q, next %q), freeze %d ms\n",
			rp.ID, disk, d.ChangedBytes, d.ChangeSource, d.BitmapRead, d.Bitmap, rp.FreezeMillis)
		if d.ChangeReason != "" {
			fmt.Fprintf(out, "  %s\n", d.ChangeReason)
		}
	}
	return nil
}

// write writes 1 MiB to node through a temporary writable NBD export,
// with qemu-io.
func write(ctx context.Context, c *qemu.Client, node, nbdSocket string) error {
	const id = "qemubackup-writer"
	if err := c.Execute(ctx, "block-export-add", map[string]any{"type": "nbd", "id": id, "node-name": node, "name": id, "writable": true}, nil); err != nil {
		return err
	}
	defer c.Execute(context.WithoutCancel(ctx), "block-export-del", map[string]any{"id": id}, nil)
	uri := "nbd+unix:///" + id + "?socket=" + nbdSocket
	if out, err := exec.CommandContext(ctx, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 8M 1M", uri).CombinedOutput(); err != nil {
		return fmt.Errorf("qemu-io: %w: %s", err, out)
	}
	return nil
}
