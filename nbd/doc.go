// Package nbd serves disks read-only over the Network Block Device
// protocol, so that any NBD client (qemu, nbd-client, a hypervisor) can use
// a restore point at once, without restoring it first.
//
// It speaks the fixed newstyle handshake with NBD_OPT_GO, NBD_OPT_INFO,
// NBD_OPT_LIST, NBD_OPT_ABORT and NBD_OPT_EXPORT_NAME, and in transmission
// NBD_CMD_READ and NBD_CMD_DISC; writes and trims are refused with EPERM,
// other commands and options with an error. Every length a client sends is
// checked before anything is allocated or read, and a client that breaks the
// protocol (a bad magic, an oversized request) is disconnected; neither can
// crash the server. Each connection is served by its own goroutine.
package nbd
