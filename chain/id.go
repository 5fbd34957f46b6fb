package chain

import (
	"encoding/hex"
	"fmt"

	"github.com/zeebo/blake3"
)

// IDSize is the length of an [ID] in bytes.
const IDSize = 32

// ID names a blob by its content: the BLAKE3-256 hash of its plaintext.
// The all-zero ID, [ZeroID], is reserved for "all zeros": a block or a whole
// subtree of a block map that holds only zero bytes, which is never stored.
type ID [IDSize]byte

// ZeroID stands for a block, or a subtree of blocks, that is all zeros.
var ZeroID ID

// Hash returns the ID of data.
func Hash(data []byte) ID { return blake3.Sum256(data) }

// IsZero reports whether id is [ZeroID].
func (id ID) IsZero() bool { return id == ZeroID }

// String returns the ID in lower-case hex.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 12 hex digits, for messages people read.
func (id ID) Short() string { return hex.EncodeToString(id[:6]) }

// ParseID parses a 64-digit hex ID.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*IDSize {
		return id, fmt.Errorf("parse ID %q: want %d hex digits", s, 2*IDSize)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("parse ID %q: %w", s, err)
	}
	return id, nil
}

// MarshalText encodes the ID as hex, so IDs read well in JSON.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText decodes a hex ID.
func (id *ID) UnmarshalText(b []byte) error {
	parsed, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = parsed
	return nil
}
