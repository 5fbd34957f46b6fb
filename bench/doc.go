// Package bench holds diskpoint's benchmarks: go test -bench . ./bench
//
// Images are generated (internal/demodisk's mixed image: holes, text,
// random data, repeated runs) at DISKPOINT_BENCH_SIZE bytes (default 64MiB;
// "2GiB" for the figures in the README). Every benchmark calls b.SetBytes
// with the disk's size, so MB/s is disk bytes per second.
package bench
