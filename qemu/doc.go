// Package qemu backs up the disks of a running QEMU or qemu-storage-daemon
// the way libvirt's pull-mode backup does: it talks QMP to the daemon
// ([Dial], [Client]), starts a new dirty bitmap and a copy-before-write
// fleecing node in one transaction, exports the frozen view over NBD with
// the previous bitmap, lets the caller read it (with the NBD disk source of
// package snapshot), and tears everything down ([PullBackup]).
//
// The guest is held up only for the transaction, which [PullExport]
// reports as FreezeWindow. On success the new bitmap is kept for the next
// backup and the previous one removed; on failure the new bitmap is merged
// back into the previous one, which is re-enabled, so that no write is
// lost between backups.
package qemu
