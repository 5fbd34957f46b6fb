// Package cachestore is a [chain.Store] that keeps a local copy of the
// repository metadata another store holds far away (S3, Azure Blob): the
// index files and the packs of block-map (tree) nodes. An incremental
// create against a remote repository then downloads only what changed
// since the last run on this host, as restic's and kopia's local caches do.
//
// What it keeps, and why that is safe:
//
//   - Only objects that never change under their name: index files
//     ("index/ID") and tree packs ("packs/XX/ID", recognised by
//     chain.IsTreePackAccess on the call's context), both named by the hash
//     of their bytes. Everything else (config, keys, manifests, locks,
//     state, data packs) goes to the store every time.
//   - Every cached object is verified when used: a cache file carries a
//     BLAKE3-256 for each 64 KiB of the object, and every read checks the
//     segments it serves. A file that fails (a damaged disk, a truncated
//     write, someone's edit) is deleted and the object fetched again, so a
//     damaged cache heals instead of being reported as repository damage.
//   - The listing always comes from the store: List passes through, and a
//     complete listing drops the cached objects under its prefix that the
//     store no longer has (GC deleted them elsewhere), so they are not
//     served as if present. Delete drops the copy first.
//   - It is bounded: past Options.MaxBytes the least recently used objects
//     are deleted. Use is recorded in the files' modification times, so
//     the order survives from one process to the next.
//
// Writes go to the store first; an index file or tree pack written through
// the cache is kept too (write-through), so the create that follows finds
// the previous create's metadata at hand.
//
// A cache file is written to a temporary name and renamed into place, so
// processes can share a cache directory. The directory of one repository
// is DefaultBase()/ID, with ID the repository's (RepositoryDir).
package cachestore
