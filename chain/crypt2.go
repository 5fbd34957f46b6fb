package chain

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/zeebo/blake3"
	"golang.org/x/crypto/chacha20poly1305"
)

// Encryption in format version 2 (chain/FORMAT.md, "Version 2: keys and
// encryption", says why each choice was made). A repository has one random
// master key; key objects (keyring.go) wrap it for each user credential, so
// a credential changes without touching anything else. From the master key,
// BLAKE3's derive_key makes independent subkeys:
//
//   - an ID key: blob IDs are keyed BLAKE3-256, as in version 1;
//   - a data key: blobs are sealed with XChaCha20-Poly1305 under it;
//   - a metadata key: pack headers, index files, locks, manifests, state
//     and logs are sealed under it;
//   - a config MAC key: the config carries a keyed BLAKE3 of its canonical
//     bytes (configmac.go).
//
// Every seal draws a random 192-bit nonce: at that size random nonces do not
// collide however many messages one key seals (FORMAT.md gives the bound),
// so blobs, repacks and metadata share one key per purpose without a
// counter to keep. The associated data says what the bytes are (sealAD), so
// that sealed bytes cannot be passed off as anything else.

// masterKeySize is the length of a version 2 master key.
const masterKeySize = 32

// sealOverhead2 is what sealing adds: a 24-byte nonce and a 16-byte tag.
const sealOverhead2 = chacha20poly1305.NonceSizeX + chacha20poly1305.Overhead

// The derive_key contexts of the version 2 subkeys. Changing one changes
// every repository's keys: they are part of the format.
const (
	contextIDKey       = "diskpoint v2 blob IDs"
	contextDataKey     = "diskpoint v2 data XChaCha20-Poly1305"
	contextMetadataKey = "diskpoint v2 metadata XChaCha20-Poly1305"
	contextConfigMAC   = "diskpoint v2 config MAC"
)

// sealKind says what sealed bytes are; it begins their associated data.
type sealKind string

const (
	sealKindBlob       sealKind = "blob"        // data key; context: the blob ID
	sealKindPackHeader sealKind = "pack header" // metadata key; context: the pack's data size (uint64 LE)
	sealKindIndex      sealKind = "index"       // metadata key, segmented (sealedfile.go)
	sealKindLock       sealKind = "lock"        // metadata key; context: the lock's object name
	sealKindObject     sealKind = "object"      // metadata key; context: the object's name (manifests, state, logs)
	sealKindKey        sealKind = "key"         // a key object's KEK; context: see keyObject.associatedData
)

// sealAD is the associated data of a seal: "diskpoint v2 " | kind | 0 | context.
// The zero byte ends the kind, so no kind's context can pose as another kind.
func sealAD(kind sealKind, context []byte) []byte {
	ad := make([]byte, 0, len("diskpoint v2 ")+len(kind)+1+len(context))
	ad = append(ad, "diskpoint v2 "...)
	ad = append(ad, kind...)
	ad = append(ad, 0)
	return append(ad, context...)
}

// errUnauthentic is what a failed open says, whatever the cause: the bytes
// were changed, or sealed under another key or as something else.
var errUnauthentic = errors.New("authentication failed: damaged, sealed with another key, or not what it claims to be")

// subkeys2 are the keys a version 2 master key derives.
type subkeys2 struct {
	id        [32]byte
	data      cipher.AEAD
	metadata  cipher.AEAD
	configMAC [32]byte
	hashers   sync.Pool
}

// deriveSubkeys2 makes the subkeys of master. idKey, when not nil, is used
// as the ID key instead of the derived one: a repository converted from an
// encrypted version 1 repository keeps that key, so that no blob is renamed.
func deriveSubkeys2(master, idKey []byte) (*subkeys2, error) {
	if len(master) != masterKeySize {
		return nil, fmt.Errorf("master key of %d bytes, want %d", len(master), masterKeySize)
	}
	k := &subkeys2{}
	if idKey == nil {
		blake3.DeriveKey(contextIDKey, master, k.id[:])
	} else if len(idKey) != len(k.id) {
		return nil, fmt.Errorf("ID key of %d bytes, want %d", len(idKey), len(k.id))
	} else {
		copy(k.id[:], idKey)
	}
	blake3.DeriveKey(contextConfigMAC, master, k.configMAC[:])
	var err error
	if k.data, err = newAEAD2(contextDataKey, master); err != nil {
		return nil, err
	}
	if k.metadata, err = newAEAD2(contextMetadataKey, master); err != nil {
		return nil, err
	}
	k.hashers.New = func() any {
		h, _ := blake3.NewKeyed(k.id[:])
		return h
	}
	return k, nil
}

func newAEAD2(context string, master []byte) (cipher.AEAD, error) {
	var key [chacha20poly1305.KeySize]byte
	blake3.DeriveKey(context, master, key[:])
	return chacha20poly1305.NewX(key[:])
}

// hash names a blob: keyed BLAKE3-256 under the ID key.
func (k *subkeys2) hash(data []byte) ID {
	h := k.hashers.Get().(*blake3.Hasher)
	defer k.hashers.Put(h)
	h.Reset()
	h.Write(data)
	var id ID
	h.Sum(id[:0])
	return id
}

// seal2 appends nonce (24) | ciphertext | tag (16) of plaintext to dst.
func seal2(aead cipher.AEAD, dst, plaintext, ad []byte) []byte {
	var nonce [chacha20poly1305.NonceSizeX]byte
	// crypto/rand.Read does not fail (since Go 1.24 it crashes the program
	// rather than return an error).
	_, _ = rand.Read(nonce[:])
	dst = append(dst, nonce[:]...)
	return aead.Seal(dst, nonce[:], plaintext, ad)
}

// open2 undoes seal2, appending the plaintext to dst.
func open2(aead cipher.AEAD, dst, sealed, ad []byte) ([]byte, error) {
	if len(sealed) < sealOverhead2 {
		return nil, fmt.Errorf("sealed data of %d bytes, shorter than the %d sealing adds", len(sealed), sealOverhead2)
	}
	n := chacha20poly1305.NonceSizeX
	out, err := aead.Open(dst, sealed[:n], sealed[n:], ad)
	if err != nil {
		return nil, errUnauthentic
	}
	return out, nil
}

// sealBlob seals a blob's stored bytes (compressed or raw) under the data
// key, bound to its ID.
func (k *subkeys2) sealBlob(dst []byte, id ID, plaintext []byte) []byte {
	return seal2(k.data, dst, plaintext, sealAD(sealKindBlob, id[:]))
}

// openBlob undoes sealBlob.
func (k *subkeys2) openBlob(dst []byte, id ID, sealed []byte) ([]byte, error) {
	out, err := open2(k.data, dst, sealed, sealAD(sealKindBlob, id[:]))
	if err != nil {
		return nil, corrupt("blob "+id.String(), "%v", err)
	}
	return out, nil
}

// sealPackHeader seals a pack's header, bound to the size of the data
// before it: a pack's name is the hash of its sealed bytes, so it cannot be
// the associated data, and the data size keeps a header from being moved to
// a pack of other blobs (whose own seals name their IDs besides).
func (k *subkeys2) sealPackHeader(dst, header []byte, dataSize int64) []byte {
	return seal2(k.metadata, dst, header, sealAD(sealKindPackHeader, binary.LittleEndian.AppendUint64(nil, uint64(dataSize))))
}

// openPackHeader undoes sealPackHeader; pack names the pack in errors.
func (k *subkeys2) openPackHeader(pack string, sealed []byte, dataSize int64) ([]byte, error) {
	out, err := open2(k.metadata, nil, sealed, sealAD(sealKindPackHeader, binary.LittleEndian.AppendUint64(nil, uint64(dataSize))))
	if err != nil {
		return nil, corrupt(pack, "header: %v", err)
	}
	return out, nil
}

// sealLock seals a lock object's bytes, bound to its name, so that an old
// lock cannot be replayed under another name.
func (k *subkeys2) sealLock(name string, plaintext []byte) []byte {
	return seal2(k.metadata, nil, plaintext, sealAD(sealKindLock, []byte(name)))
}

// openLock undoes sealLock.
func (k *subkeys2) openLock(name string, sealed []byte) ([]byte, error) {
	out, err := open2(k.metadata, nil, sealed, sealAD(sealKindLock, []byte(name)))
	if err != nil {
		return nil, corrupt(name, "%v", err)
	}
	return out, nil
}

// sealNamed seals a small object that lives under a fixed name (a
// manifest, a collection's state, a hook log), bound to that name.
func (k *subkeys2) sealNamed(name string, plaintext []byte) []byte {
	return seal2(k.metadata, nil, plaintext, sealAD(sealKindObject, []byte(name)))
}

// openNamed undoes sealNamed.
func (k *subkeys2) openNamed(name string, sealed []byte) ([]byte, error) {
	out, err := open2(k.metadata, nil, sealed, sealAD(sealKindObject, []byte(name)))
	if err != nil {
		return nil, corrupt(name, "%v", err)
	}
	return out, nil
}
