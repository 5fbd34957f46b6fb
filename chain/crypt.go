package chain

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/zeebo/blake3"
)

// Encryption at rest is opt-in, chosen when a repository is made. The user
// holds a 256-bit key (KeySize bytes, written as 64 hex digits); from it,
// BLAKE3's key derivation makes three independent subkeys:
//
//   - an ID key: blob IDs are keyed BLAKE3-256, so that names leak nothing
//     about content (nobody without the key can test whether a repository
//     holds a given block), while equal blocks still get equal IDs and
//     deduplicate;
//   - an encryption key: every blob, manifest, collection state and hook log
//     is sealed with AES-256-GCM under a random nonce, the blob's ID or the
//     object's name as associated data, so a sealed blob cannot be passed
//     off as another;
//   - a check key: the config records a keyed hash of a constant, so a wrong
//     key is refused at once with ErrWrongKey, not discovered as damage.
//
// Pack and index names stay plain BLAKE3 of their (sealed) bytes, and index
// files stay readable: they list only keyed IDs and sizes. GC decrypts block
// map nodes, never data chunks.

// KeySize is the length of a repository key.
const KeySize = 32

// Errors about keys.
var (
	ErrWrongKey    = errors.New("wrong key for this repository")
	ErrKeyRequired = errors.New("the repository is encrypted: a key is required")
)

const (
	sealedMagic = "dpe1"
	// sealOverhead is what sealing adds to a blob: a 12-byte nonce and a
	// 16-byte tag.
	sealOverhead = 12 + 16
)

// keys are a repository's subkeys.
type keys struct {
	// user is the key itself: Migrate makes it the first credential of
	// the version 2 key ring it converts the repository to.
	user    []byte
	id      [32]byte
	aead    cipher.AEAD
	check   [32]byte
	hashers sync.Pool
}

// NewKey returns a new random repository key.
func NewKey() ([]byte, error) {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	return key, nil
}

// ParseKey reads a key written as 64 hex digits (surrounding space ignored).
func ParseKey(s string) ([]byte, error) {
	key, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(key) != KeySize {
		return nil, fmt.Errorf("a key is %d hex digits (diskpoint keygen makes one)", 2*KeySize)
	}
	return key, nil
}

func deriveKeys(master []byte) (*keys, error) {
	if len(master) != KeySize {
		return nil, fmt.Errorf("key of %d bytes, want %d", len(master), KeySize)
	}
	k := &keys{user: bytes.Clone(master)}
	var enc [32]byte
	blake3.DeriveKey("diskpoint 2026-11-22 blob IDs", master, k.id[:])
	blake3.DeriveKey("diskpoint 2026-11-22 AES-256-GCM", master, enc[:])
	blake3.DeriveKey("diskpoint 2026-11-22 key check", master, k.check[:])
	block, err := aes.NewCipher(enc[:])
	if err != nil {
		return nil, err
	}
	if k.aead, err = cipher.NewGCM(block); err != nil {
		return nil, err
	}
	k.hashers.New = func() any {
		h, _ := blake3.NewKeyed(k.id[:])
		return h
	}
	return k, nil
}

// checkValue is what the config records to recognise the key.
func (k *keys) checkValue() string {
	h, _ := blake3.NewKeyed(k.check[:])
	h.Write([]byte("diskpoint key check"))
	return hex.EncodeToString(h.Sum(nil))
}

func (k *keys) matches(check string) bool {
	return subtle.ConstantTimeCompare([]byte(k.checkValue()), []byte(check)) == 1
}

func (k *keys) hash(data []byte) ID {
	h := k.hashers.Get().(*blake3.Hasher)
	defer k.hashers.Put(h)
	h.Reset()
	h.Write(data)
	var id ID
	h.Sum(id[:0])
	return id
}

// seal appends nonce || ciphertext || tag of plaintext to dst.
func (k *keys) seal(dst, plaintext, aad []byte) []byte {
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic(errors.Join(errors.New("crypto/rand failed"), err))
	}
	dst = append(dst, nonce...)
	return k.aead.Seal(dst, nonce, plaintext, aad)
}

// open undoes seal.
func (k *keys) open(dst, sealed, aad []byte) ([]byte, error) {
	n := k.aead.NonceSize()
	if len(sealed) < n+k.aead.Overhead() {
		return nil, errors.New("sealed data too short")
	}
	out, err := k.aead.Open(dst, sealed[:n], sealed[n:], aad)
	if err != nil {
		return nil, errors.New("authentication failed: damaged, or sealed with another key")
	}
	return out, nil
}

// HashBlob names data as this repository does: BLAKE3-256, keyed when the
// repository is encrypted (by the key in version 1, by the key ring's ID
// key in version 2).
func (r *Repository) HashBlob(data []byte) ID {
	switch {
	case r.ring != nil:
		return r.ring.keys.hash(data)
	case r.keys != nil:
		return r.keys.hash(data)
	}
	return Hash(data)
}

// Encrypted reports whether the repository encrypts what it stores.
func (r *Repository) Encrypted() bool { return r.keys != nil || r.ring != nil }

// idKey is the key blob IDs are keyed with, or nil in a plain repository.
func (r *Repository) idKey() *[32]byte {
	switch {
	case r.ring != nil:
		return &r.ring.keys.id
	case r.keys != nil:
		return &r.keys.id
	}
	return nil
}

// packKeys returns the keys that seal pack headers: an encrypted version 2
// repository's, else nil (version 1's pack headers are plain).
func (r *Repository) packKeys() *subkeys2 {
	if r.ring == nil {
		return nil
	}
	return r.ring.keys
}

// sealBlob appends a blob's stored bytes sealed to dst: AES-256-GCM under
// the key in version 1, XChaCha20-Poly1305 under the data key in version
// 2, bound to the blob's ID either way. The repository must be encrypted.
func (r *Repository) sealBlob(dst []byte, id ID, stored []byte) []byte {
	if r.ring != nil {
		return r.ring.keys.sealBlob(dst, id, stored)
	}
	return r.keys.seal(dst, stored, id[:])
}

// openBlob undoes sealBlob, appending the stored bytes to dst.
func (r *Repository) openBlob(dst []byte, id ID, sealed []byte) ([]byte, error) {
	if r.ring != nil {
		return open2(r.ring.keys.data, dst, sealed, sealAD(sealKindBlob, id[:]))
	}
	return r.keys.open(dst, sealed, id[:])
}

// sealObject prepares a small object (manifest, state, log) for storage in
// a version 1 repository. A version 2 repository's store seals every object
// itself (sealedStore), so this passes its objects as they are.
func (r *Repository) sealObject(name string, data []byte) []byte {
	if r.keys == nil {
		return data
	}
	return r.keys.seal([]byte(sealedMagic), data, []byte(name))
}

// openObject undoes sealObject.
func (r *Repository) openObject(name string, data []byte) ([]byte, error) {
	if r.keys == nil {
		return data, nil
	}
	if !strings.HasPrefix(string(data), sealedMagic) {
		return nil, corrupt(name, "not sealed, in an encrypted repository")
	}
	out, err := r.keys.open(nil, data[len(sealedMagic):], []byte(name))
	if err != nil {
		return nil, corrupt(name, "%v", err)
	}
	return out, nil
}

// sameIDs reports whether two repositories name blobs alike, so that blobs
// can move between them by ID.
func (r *Repository) sameIDs(o *Repository) bool {
	a, b := r.idKey(), o.idKey()
	if (a == nil) != (b == nil) {
		return false
	}
	return a == nil || *a == *b
}
