package chain

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/bits"
	"time"
)

// FormatVersion is the repository format Init writes by default: version
// 1, which every release reads. Version 2 (FormatVersion2) keeps its index
// in sorted index files that are looked up with ranged reads, so that its
// index is never held in memory whole (see FORMAT.md).
const FormatVersion = 1

// FormatVersion2 is the format of repositories whose index files are index
// v2 files. It is chosen at Init (Config.Version); this build reads and
// writes both versions.
const FormatVersion2 = 2

// Block size limits and defaults. DefaultBlockSize was chosen by measurement;
// the README gives the figures.
const (
	MinBlockSize     = 16 << 10
	MaxBlockSize     = 16 << 20
	DefaultBlockSize = 64 << 10
	// DefaultTreeFanout is how many IDs a block-map node holds. A leaf of 256
	// blocks is 8 KiB of IDs: small enough that a scattered change rewrites
	// little metadata, large enough that a 1 TiB disk's map is three levels.
	DefaultTreeFanout = 256
	// DefaultPackSize is the size at which a pack is closed and written.
	DefaultPackSize = 16 << 20
)

// Config is the repository's settings, stored as the object "config".
type Config struct {
	Version    int       `json:"version"`
	ID         string    `json:"id"`
	Created    time.Time `json:"created"`
	BlockSize  int       `json:"block_size"`
	TreeFanout int       `json:"tree_fanout"`
	PackSize   int       `json:"pack_size"`
	ChunkHash  string    `json:"chunk_hash"`
	Compressor string    `json:"compression"`
	// Encryption is "aes-256-gcm" for an encrypted version 1 repository
	// (KeyCheck then recognises the key, see crypt.go),
	// "xchacha20-poly1305" for an encrypted version 2 one (its key ring is
	// keys/, and the config carries a MAC: see configmac.go), else empty.
	Encryption string `json:"encryption,omitempty"`
	KeyCheck   string `json:"key_check,omitempty"`
}

const configName = "config"

// Config.Encryption of encrypted repositories, by format version.
const (
	encryptionV1 = "aes-256-gcm"
	encryptionV2 = "xchacha20-poly1305"
)

// NewConfig returns a config with the given block size (0 for the default)
// and the defaults for the rest.
func NewConfig(blockSize int) (Config, error) {
	if blockSize == 0 {
		blockSize = DefaultBlockSize
	}
	if err := CheckBlockSize(blockSize); err != nil {
		return Config{}, err
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return Config{}, fmt.Errorf("new repository ID: %w", err)
	}
	return Config{
		Version:    FormatVersion,
		ID:         hex.EncodeToString(id[:]),
		Created:    time.Now().UTC(),
		BlockSize:  blockSize,
		TreeFanout: DefaultTreeFanout,
		PackSize:   DefaultPackSize,
		ChunkHash:  "blake3-256",
		Compressor: "zstd",
	}, nil
}

// CheckBlockSize refuses a block size that is not a power of two between
// MinBlockSize and MaxBlockSize.
func CheckBlockSize(n int) error {
	if n < MinBlockSize || n > MaxBlockSize || bits.OnesCount(uint(n)) != 1 {
		return fmt.Errorf("block size %d: must be a power of two from %d KiB to %d MiB", n, MinBlockSize>>10, MaxBlockSize>>20)
	}
	return nil
}

func decodeConfig(data []byte) (Config, error) {
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return c, corrupt(configName, "%v", err)
	}
	if c.Version != FormatVersion && c.Version != FormatVersion2 {
		return c, fmt.Errorf("repository format version %d (this build reads %d and %d): %w", c.Version, FormatVersion, FormatVersion2, ErrUnsupportedVersion)
	}
	if err := CheckBlockSize(c.BlockSize); err != nil {
		return c, corrupt(configName, "%v", err)
	}
	if c.TreeFanout < 2 || c.TreeFanout > 1<<16 || c.PackSize < 1<<20 || c.PackSize > 1<<30 {
		return c, corrupt(configName, "tree fanout %d or pack size %d out of range", c.TreeFanout, c.PackSize)
	}
	plain := c.ChunkHash == "blake3-256" && c.Encryption == "" && c.KeyCheck == ""
	// Each version has its own encryption: version 1 the key itself, with
	// a key check; version 2 a key ring (keys/) and the config's MAC.
	sealed1 := c.Version == FormatVersion && c.ChunkHash == "blake3-256-keyed" && c.Encryption == encryptionV1 && c.KeyCheck != ""
	sealed2 := c.Version == FormatVersion2 && c.ChunkHash == "blake3-256-keyed" && c.Encryption == encryptionV2 && c.KeyCheck == ""
	if !plain && !sealed1 && !sealed2 || c.Compressor != "zstd" {
		return c, fmt.Errorf("repository uses chunk hash %q, encryption %q and compression %q: %w", c.ChunkHash, c.Encryption, c.Compressor, ErrUnsupportedVersion)
	}
	return c, nil
}
