// Package nbd speaks the Network Block Device protocol both ways: a
// read-only server, so that any NBD client (qemu, nbd-client, a
// hypervisor) can use a restore point at once, without restoring it first;
// and a client, so that diskpoint can read the disks of running VMs that
// QEMU, qemu-storage-daemon, qemu-nbd or nbdkit export, with their
// allocation and dirty bitmaps. The two share protocol.go.
//
// The server speaks the fixed newstyle handshake with NBD_OPT_GO,
// NBD_OPT_INFO, NBD_OPT_LIST, NBD_OPT_ABORT, NBD_OPT_EXPORT_NAME,
// NBD_OPT_STRUCTURED_REPLY and NBD_OPT_{LIST,SET}_META_CONTEXT (one
// context, base:allocation), and in transmission NBD_CMD_READ,
// NBD_CMD_BLOCK_STATUS and NBD_CMD_DISC; writes and trims are refused with
// EPERM, other commands and options with an error. One server may offer
// several exports. Every length a client sends is checked before anything
// is allocated or read, and a client that breaks the protocol (a bad magic,
// an oversized request) is disconnected; neither can crash the server.
// Each connection is served by its own goroutine.
//
// The client (Dial, Client) reads one export named by an NBD URI
// (nbd://HOST:PORT/EXPORT, nbd+unix:///EXPORT?socket=PATH): structured
// replies, meta contexts (BaseAllocation, DirtyBitmap(name)) and
// NBD_CMD_BLOCK_STATUS, with several requests in flight on each connection
// (one reader goroutine hands each reply to its request by handle) and
// several connections when the server allows them (NBD_FLAG_CAN_MULTI_CONN).
// Every reply is hostile input: lengths and counts are bounded before
// anything is allocated, and a reply to a handle not in flight, data
// outside its request or overlapping other data, a read not covered
// whole, or block status past the end of the export or not advancing is an
// error wrapping ErrProtocol that names the server.
package nbd
