// Package demodisk makes disk images that look like a VM's: holes, text,
// random (already compressed) data, and repeated runs; and changes them the
// way a running VM does, with scattered small writes. The quickstart, the
// tests and the benchmarks share it so they all measure the same thing.
package demodisk

import (
	"fmt"
	"math/rand/v2"
	"os"

	"github.com/diskpoint/diskpoint/blockdiff"
)

// Mix is the share of each kind of content, out of their sum.
type Mix struct {
	Holes, Text, Random, Repeats int
}

// MixedImage is the mix the performance issue measures against: about 30%
// holes, 30% compressible text, 25% random data and 15% repeated runs.
var MixedImage = Mix{Holes: 30, Text: 30, Random: 25, Repeats: 15}

const page = 4096

// Create writes a sparse image of size bytes at path, deterministic for seed.
// Content comes in regions of 64 KiB to 1 MiB, aligned to 4 KiB as a file
// system would place them, not to any block size.
func Create(path string, size int64, seed uint64, mix Mix) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	total := mix.Holes + mix.Text + mix.Random + mix.Repeats
	var earlier [][]byte // regions a repeat may copy
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		n := min(int64(16+rng.IntN(241))*page, size-off) // 64 KiB .. 1 MiB
		region := buf[:n]
		switch k := rng.IntN(total); {
		case k < mix.Holes:
			off += n
			continue
		case k < mix.Holes+mix.Text:
			fillText(rng, region)
		case k < mix.Holes+mix.Text+mix.Random || len(earlier) == 0:
			fillRandom(rng, region)
		default:
			src := earlier[rng.IntN(len(earlier))]
			region = region[:min(int64(len(src)), n)]
			copy(region, src)
		}
		if _, err := f.WriteAt(region, off); err != nil {
			f.Close()
			return err
		}
		if len(earlier) < 64 && len(region) >= 64<<10 {
			earlier = append(earlier, append([]byte(nil), region...))
		}
		off += int64(len(region))
	}
	return f.Close()
}

// Scatter overwrites about fraction of the image with writes of 4 to 64 KiB
// at 4 KiB-aligned places, as a VM's file systems do, and returns the
// ranges written (what a hypervisor's dirty bitmap would report).
func Scatter(path string, fraction float64, seed uint64) ([]blockdiff.Range, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	rng := rand.New(rand.NewPCG(seed, seed^0xc4a6e))
	budget := int64(fraction * float64(size))
	var ranges []blockdiff.Range
	buf := make([]byte, 64<<10)
	for written := int64(0); written < budget; {
		n := int64(1+rng.IntN(16)) * page
		off := rng.Int64N(size/page) * page
		n = min(n, size-off)
		if rng.IntN(2) == 0 {
			fillText(rng, buf[:n])
		} else {
			fillRandom(rng, buf[:n])
		}
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			return nil, fmt.Errorf("scatter writes on %s: %w", path, err)
		}
		ranges = append(ranges, blockdiff.Range{Offset: off, Length: n})
		written += n
	}
	return ranges, f.Sync()
}

var words = []string{
	"the", "disk", "block", "kernel", "page", "cache", "journal", "inode", "extent", "write",
	"read", "flush", "commit", "restore", "point", "virtual", "machine", "log", "error", "info",
	"service", "started", "stopped", "request", "response", "user", "session", "database", "table", "index",
	"2026-11-22", "12:00:01", "INFO", "WARN", "GET", "/api/v1/items", "200", "404", "ok", "timeout",
}

func fillText(rng *rand.Rand, b []byte) {
	i := 0
	for i < len(b) {
		w := words[rng.IntN(len(words))]
		i += copy(b[i:], w)
		if i < len(b) {
			if rng.IntN(12) == 0 {
				b[i] = '\n'
			} else {
				b[i] = ' '
			}
			i++
		}
	}
}

func fillRandom(rng *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		v := rng.Uint64()
		for k := range 8 {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	for i := len(b) &^ 7; i < len(b); i++ {
		b[i] = byte(rng.Uint32())
	}
}
