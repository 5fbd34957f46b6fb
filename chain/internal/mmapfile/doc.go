// Package mmapfile maps part of a file read-only into memory, for readers
// of large immutable files (index files' tables) that should hold them
// outside the Go heap: mapped pages are the page cache's, the collector
// never scans them nor counts them towards its heap goal.
package mmapfile
