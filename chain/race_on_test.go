//go:build race

package chain_test

// raceEnabled: under the race detector sync.Pool drops a share of what
// is put back on purpose, so counts of bytes allocated mean nothing.
const raceEnabled = true
