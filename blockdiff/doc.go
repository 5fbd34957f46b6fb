// Package blockdiff reads disks and finds what changed.
//
// [OpenDisk] opens a raw disk image (sparse or not) or a Linux block device;
// [NewReaderDisk] makes a disk of any io.ReaderAt of known size (a disk
// that is not a file: an NBD client's, or one generated for a test).
// [Scan] reads a disk in parallel, in aligned reads into pooled buffers,
// skipping the holes of sparse files without reading them; it hashes every
// block (BLAKE3-256, the same ID the repository names chunks by), recognises
// all-zero blocks, compares each block with the parent restore point's hash
// for the same place, and hands on only the blocks that changed. Given a
// caller's list of changed byte ranges (a hypervisor's dirty bitmap, see
// [ParseRanges]) it reads only the blocks those ranges touch and takes the
// rest from the parent, so the work is proportional to the change.
//
// Scan works in segments of consecutive blocks, one block-map leaf each,
// and delivers them in order, so the caller can write the block map as the
// scan goes, in constant memory.
package blockdiff
