// Package chain is diskpoint's repository format: everything that is stored,
// and how.
//
// A repository is a set of named objects in a [Store] (a local directory by
// default). Disk data is cut into fixed-size blocks; each block that is not
// all zeros is a chunk, named by the BLAKE3-256 hash of its bytes ([ID]),
// compressed with zstd when that makes it smaller, and bundled with other
// chunks into pack files. An index maps every chunk to its pack, offset and
// length.
//
// A disk restore point is a tree of such blobs: leaves list the chunk IDs of
// consecutive blocks, inner nodes list the IDs of the nodes below. Because
// tree nodes are content-addressed too, restore points of the same disk share
// every unchanged part of their block maps, and the metadata a restore point
// adds grows with what changed, not with the disk.
//
// A [Manifest] names the roots of a VM restore point's disks; it is written
// last, so a restore point exists only once everything it references is
// durable. Deleting a manifest never breaks another; [Repository.GC] reclaims
// what no manifest reaches. FORMAT.md describes the bytes.
package chain
