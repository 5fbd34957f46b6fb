package chain

import (
	"os"
	"strconv"
)

// testFormat is the format version of the repositories the tests make:
// DISKPOINT_TEST_FORMAT=2 runs them against version 2; unset, version 1.
// Tests about version 1's bytes pin it instead.
func testFormat() int {
	if v, err := strconv.Atoi(os.Getenv("DISKPOINT_TEST_FORMAT")); err == nil && v != 0 {
		return v
	}
	return FormatVersion
}

// NewTestConfig is NewConfig in the format version the tests run against
// (see testFormat).
func NewTestConfig(blockSize int) (Config, error) {
	cfg, err := NewConfig(blockSize)
	cfg.Version = testFormat()
	return cfg, err
}
