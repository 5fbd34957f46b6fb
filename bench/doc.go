// Package bench holds diskpoint's benchmarks: go test -bench . ./bench
//
// Images are generated (internal/demodisk's mixed image: holes, text,
// random data, repeated runs) at DISKPOINT_BENCH_SIZE bytes (default 64MiB;
// "2GiB" for the figures in the README). b.SetBytes counts the bytes each
// benchmark really processes, so MB/s means what it says: disk bytes read
// (creates, restores, scans; for a create from a changed-range list, the
// changed bytes only), stored bytes read (verify), block-map bytes read
// (diff).
package bench
