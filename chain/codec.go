package chain

import (
	"fmt"
	"runtime"

	"github.com/klauspost/compress/zstd"
)

// One encoder and one decoder serve every goroutine: their EncodeAll and
// DecodeAll are safe for concurrent use and keep per-goroutine state pooled
// inside, so the hot path allocates nothing of its own.
var (
	encoder = mustEncoder()
	decoder = mustDecoder()
)

func mustEncoder() *zstd.Encoder {
	// SpeedFastest is zstd level 1: disk images are large and the CPU budget
	// is two cores; higher levels buy little on mixed images.
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithEncoderCRC(false), // the blob's ID already checks every byte
		zstd.WithZeroFrames(true))
	if err != nil {
		panic(err)
	}
	return enc
}

func mustDecoder() *zstd.Decoder {
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithDecodeAllCapLimit(true)) // a hostile blob cannot decode past its declared size
	if err != nil {
		panic(err)
	}
	return dec
}

// Blocks of already-compressed or encrypted data (a quarter of a typical
// disk image) do not shrink; compressing a 4 KiB sample from the middle
// first tells them apart for a sixteenth of the cost.
const (
	sampleSize     = 4 << 10
	sampleMinBlock = 4 * sampleSize
	sampleKeep     = 0.97 // a sample that shrinks less than 3% marks the block incompressible
)

// compressBlob returns the stored form of raw and whether it is compressed:
// zstd, written into dst's memory, when that is smaller; otherwise raw
// itself, so that an incompressible block is copied only once, into its pack.
func compressBlob(dst, raw []byte) ([]byte, bool) {
	if len(raw) >= sampleMinBlock {
		mid := len(raw)/2 - sampleSize/2
		probe := getBuffer(sampleSize + 128)
		out := encoder.EncodeAll(raw[mid:mid+sampleSize], probe[:0])
		incompressible := float64(len(out)) > sampleKeep*sampleSize
		putBuffer(out)
		if incompressible {
			return raw, false
		}
	}
	out := encoder.EncodeAll(raw, dst[:0])
	if len(out) < len(raw) {
		return out, true
	}
	return raw, false
}

// DecodeSlack is how many bytes past a blob's end the decoder may scribble
// on: given that much spare capacity, zstd copies matches 16 bytes at a
// time instead of byte-exact (about 15% faster decoding here).
const DecodeSlack = 16

// decompressBlob decodes a stored blob of rawLen bytes, reusing dst's memory
// (and up to DecodeSlack bytes of its capacity past rawLen).
func decompressBlob(dst, stored []byte, compressed bool, rawLen int) ([]byte, error) {
	if !compressed {
		if len(stored) != rawLen {
			return nil, fmt.Errorf("stored length %d, want %d", len(stored), rawLen)
		}
		return append(dst[:0], stored...), nil
	}
	if cap(dst) < rawLen {
		dst = make([]byte, 0, rawLen+DecodeSlack)
	}
	// The capacity also bounds what a hostile blob can decode to.
	out, err := decoder.DecodeAll(stored, dst[:0:min(cap(dst), rawLen+DecodeSlack)])
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	if len(out) != rawLen {
		return nil, fmt.Errorf("decoded %d bytes, want %d", len(out), rawLen)
	}
	return out, nil
}
