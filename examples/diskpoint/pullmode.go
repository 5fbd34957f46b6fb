package main

import (
	"context"
	"strings"
	"time"

	"github.com/diskpoint/diskpoint/qemu"
	"github.com/diskpoint/diskpoint/snapshot"
)

// createPullMode is create -qmp: a pull-mode backup of one disk of a
// running QEMU or qemu-storage-daemon (qemu.Backup). Hooks would run only
// after the view was taken, which holds nothing still, so they are refused;
// so are the flags that name disk sources of other kinds.
func createPullMode(ctx context.Context, e *env, repoDir, collection, qmpSocket, nbdSocket string, asJSON bool, opts snapshot.CreateOptions, disks []string, otherDiskFlags int) error {
	switch {
	case qmpSocket == "" || nbdSocket == "":
		return usageError{"-qmp and -qmp-nbd go together: the daemon's QMP socket and its NBD server's socket"}
	case len(disks) != 1:
		return usageError{"-qmp backs up one disk, given as DISK=NODE"}
	case otherDiskFlags > 0:
		return usageError{"-qmp takes no -changed, -bitmap or -exclude: the daemon's dirty bitmaps say what changed"}
	case len(opts.Hooks) > 0:
		return usageError{"-qmp takes no hooks: they would run after the view was taken, holding nothing still"}
	}
	disk, node, ok := strings.Cut(disks[0], "=")
	if !ok || disk == "" || node == "" {
		return usageError{"disk " + `"` + disks[0] + `"` + ": want DISK=NODE with -qmp"}
	}
	_, c, err := openCollection(ctx, e, repoDir, collection)
	if err != nil {
		return err
	}
	client, err := qemu.Dial(ctx, qmpSocket)
	if err != nil {
		return err
	}
	defer client.Close()
	start := time.Now()
	rp, _, err := qemu.Backup(ctx, client, c, qemu.BackupOptions{Disk: disk, Node: node, NBDSocket: nbdSocket, Create: opts})
	if err != nil {
		return err
	}
	warnCreated(e, rp)
	if asJSON {
		return printJSON(e, rp)
	}
	return printCreated(e, rp, start)
}
