package demodisk

import (
	"fmt"
	"io"
	"os"

	"github.com/zeebo/blake3"
)

// Hash returns the BLAKE3 hash of the image at path, so that an example
// can show a restore is bit-exact without keeping a copy of each disk.
func Hash(path string) ([32]byte, error) {
	var sum [32]byte
	f, err := os.Open(path)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := blake3.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, fmt.Errorf("hash %s: %w", path, err)
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}
