package chain

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/zeebo/blake3"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// A version 2 repository's key ring: one random master key, wrapped once per
// credential in a key object "keys/ID". A credential is a 256-bit key (as
// DISKPOINT_KEY gives) or a password; unlocking tries the key objects until
// one opens. Adding, removing or changing a credential writes or deletes one
// small object and never touches blobs, so it never changes a blob ID.

const keysPrefix = "keys/"

// Key derivation functions of key objects.
const (
	// KDFNone: the credential is a 256-bit random key; the key-encryption
	// key is BLAKE3 derive_key of it and the object's salt. A random key
	// needs no stretching.
	KDFNone = "none"
	// KDFArgon2id: the credential is a password, stretched by Argon2id
	// with the parameters the key object records.
	KDFArgon2id = "argon2id"
)

// Errors about key objects.
var (
	// ErrLastKey: removing the key would leave the repository without one.
	ErrLastKey = errors.New("the repository's last key cannot be removed")
	// ErrKeyInUse: the key to remove is the one this key ring was unlocked
	// with; removing it could leave nobody holding a working credential.
	ErrKeyInUse = errors.New("the key in use cannot be removed")
)

const (
	keySaltSize     = 32
	keyObjectMaxLen = 4 << 10
	keyLabelMaxLen  = 200
	keyObjectIDSize = 16 // random bytes of a key object's name
	contextKeyKEK   = "diskpoint v2 key object KEK"
	keyObjectFormat = 2
)

// Argon2Params are Argon2id's cost parameters. A key object records the ones
// it was made with, so they can change without breaking existing keys.
type Argon2Params struct {
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
}

// DefaultArgon2Params are RFC 9106's second recommended setting (section
// 4: t=3, 64 MiB, 4 lanes), more than OWASP's minimum (19 MiB, t=2, p=1):
// a quarter of a second per unlock attempt on an idle 2-core machine.
var DefaultArgon2Params = Argon2Params{Time: 3, MemoryKiB: 64 << 10, Threads: 4}

// Bounds on what a key object may ask of Argon2id: a key object is read
// before anything authenticates it, so its parameters cannot be allowed to
// exhaust memory or time.
const (
	argon2MaxTime      = 64
	argon2MaxMemoryKiB = 1 << 20 // 1 GiB
	argon2MaxThreads   = 64
)

func (p Argon2Params) check() error {
	if p.Time < 1 || p.Time > argon2MaxTime || p.Threads < 1 || p.Threads > argon2MaxThreads ||
		p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > argon2MaxMemoryKiB {
		return fmt.Errorf("argon2id parameters time %d, memory %d KiB, threads %d: out of range (time 1-%d, memory 8 KiB per thread to %d KiB, threads 1-%d)",
			p.Time, p.MemoryKiB, p.Threads, argon2MaxTime, argon2MaxMemoryKiB, argon2MaxThreads)
	}
	return nil
}

// Credential is what opens a key object: a 256-bit key or a password.
type Credential struct {
	key      []byte
	password []byte
}

// KeyCredential returns the credential of a 256-bit key (KeySize bytes, as
// NewKey and ParseKey make).
func KeyCredential(key []byte) (Credential, error) {
	if len(key) != KeySize {
		return Credential{}, fmt.Errorf("key of %d bytes, want %d", len(key), KeySize)
	}
	return Credential{key: bytes.Clone(key)}, nil
}

// PasswordCredential returns the credential of a password; it must not be
// empty.
func PasswordCredential(password string) (Credential, error) {
	if password == "" {
		return Credential{}, errors.New("empty password")
	}
	return Credential{password: []byte(password)}, nil
}

func (c Credential) kdf() string {
	if c.key != nil {
		return KDFNone
	}
	return KDFArgon2id
}

// KeyOptions describe a new key object.
type KeyOptions struct {
	// Label is an optional note shown by ListKeys: up to 200 bytes of
	// printable UTF-8.
	Label string
	// Host is recorded as where the key was made; empty means this host.
	Host string
	// Argon2 are the parameters for a password credential; the zero value
	// means DefaultArgon2Params.
	Argon2 Argon2Params
}

// keyObject is a key object as stored (JSON). Every field but WrappedKey is
// in the associated data of the wrapped key, so none can be changed unseen.
type keyObject struct {
	Version    int           `json:"version"`
	KDF        string        `json:"kdf"`
	Argon2     *Argon2Params `json:"argon2id,omitempty"`
	Salt       []byte        `json:"salt"`
	Created    time.Time     `json:"created"`
	Host       string        `json:"host"`
	Label      string        `json:"label,omitempty"`
	WrappedKey []byte        `json:"wrapped_key,omitempty"`
}

// The wrapped secret is the master key, or the master key followed by the
// ID key of a repository converted from version 1 (deriveSubkeys2).
const (
	wrappedKeyLen       = sealOverhead2 + masterKeySize
	wrappedKeyWithIDLen = sealOverhead2 + masterKeySize + 32
)

func keyObjectName(id string) string { return keysPrefix + id }

// encode returns the object's stored bytes; decodeKeyObject accepts only
// these, so that every byte of a key object is covered by its seal.
func (o *keyObject) encode() ([]byte, error) { return jsonIndent(o) }

// associatedData binds the wrapped key to the object's name and to every
// other field: name | 0 | the object's JSON without wrapped_key.
func (o *keyObject) associatedData(name string) ([]byte, error) {
	meta := *o
	meta.WrappedKey = nil
	data, err := json.Marshal(&meta)
	if err != nil {
		return nil, err
	}
	return sealAD(sealKindKey, append(append([]byte(name), 0), data...)), nil
}

// decodeKeyObject parses and checks a key object's bytes. It reads bytes
// nobody has authenticated yet, so it bounds everything before use.
func decodeKeyObject(name string, data []byte) (*keyObject, error) {
	if len(data) > keyObjectMaxLen {
		return nil, corrupt(name, "key object of %d bytes, more than %d", len(data), keyObjectMaxLen)
	}
	// The version first, leniently: a newer key object may have members
	// this build does not know, and is then unsupported, not damaged.
	var version struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(data, &version); err != nil {
		return nil, corrupt(name, "%v", err)
	}
	if version.Version != keyObjectFormat {
		return nil, fmt.Errorf("%s: key object version %d (this build reads %d): %w", name, version.Version, keyObjectFormat, ErrUnsupportedVersion)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var o keyObject
	if err := dec.Decode(&o); err != nil {
		return nil, corrupt(name, "%v", err)
	}
	switch o.KDF {
	case KDFNone:
		if o.Argon2 != nil {
			return nil, corrupt(name, "kdf none with argon2id parameters")
		}
	case KDFArgon2id:
		if o.Argon2 == nil {
			return nil, corrupt(name, "kdf argon2id without parameters")
		}
		if err := o.Argon2.check(); err != nil {
			return nil, corrupt(name, "%v", err)
		}
	default:
		return nil, fmt.Errorf("%s: key derivation function %q: %w", name, o.KDF, ErrUnsupportedVersion)
	}
	if len(o.Salt) != keySaltSize {
		return nil, corrupt(name, "salt of %d bytes, want %d", len(o.Salt), keySaltSize)
	}
	if len(o.WrappedKey) != wrappedKeyLen && len(o.WrappedKey) != wrappedKeyWithIDLen {
		return nil, corrupt(name, "wrapped key of %d bytes, want %d or %d", len(o.WrappedKey), wrappedKeyLen, wrappedKeyWithIDLen)
	}
	if err := checkKeyText("label", o.Label); err != nil {
		return nil, corrupt(name, "%v", err)
	}
	if err := checkKeyText("host", o.Host); err != nil {
		return nil, corrupt(name, "%v", err)
	}
	canonical, err := o.encode()
	if err != nil {
		return nil, corrupt(name, "%v", err)
	}
	if !bytes.Equal(canonical, data) {
		return nil, corrupt(name, "not in canonical form (changed by hand, or damaged)")
	}
	return &o, nil
}

// checkKeyText accepts up to keyLabelMaxLen bytes of printable UTF-8: what
// a list shows, and what JSON encodes back to the same bytes.
func checkKeyText(what, s string) error {
	if len(s) > keyLabelMaxLen || !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return fmt.Errorf("%s %q: want up to %d bytes of printable UTF-8", what, s, keyLabelMaxLen)
	}
	return nil
}

// kek derives the key-encryption key of o from cred.
func (o *keyObject) kek(cred Credential) []byte {
	if o.KDF == KDFNone {
		kek := make([]byte, chacha20poly1305.KeySize)
		blake3.DeriveKey(contextKeyKEK, append(bytes.Clone(cred.key), o.Salt...), kek)
		return kek
	}
	p := o.Argon2
	return argon2.IDKey(cred.password, o.Salt, p.Time, p.MemoryKiB, p.Threads, chacha20poly1305.KeySize)
}

// unwrap returns the secret o wraps, or ErrWrongKey when cred does not open
// it (or the object was changed: the two cannot be told apart).
func (o *keyObject) unwrap(name string, cred Credential) ([]byte, error) {
	if cred.kdf() != o.KDF {
		return nil, fmt.Errorf("%s: a %s key object does not open with a %s: %w", name, o.KDF, cred.describe(), ErrWrongKey)
	}
	aead, err := chacha20poly1305.NewX(o.kek(cred))
	if err != nil {
		return nil, err
	}
	ad, err := o.associatedData(name)
	if err != nil {
		return nil, err
	}
	secret, err := open2(aead, nil, o.WrappedKey, ad)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, ErrWrongKey)
	}
	return secret, nil
}

func (c Credential) describe() string {
	if c.key != nil {
		return "key"
	}
	return "password"
}

// Keyring is an unlocked key ring: the master key, its subkeys, and the key
// object that opened it. Its methods may run concurrently, except ChangeKey,
// which changes the key in use.
type Keyring struct {
	secret []byte // master key, then the ID key if the repository keeps one
	keys   *subkeys2
	used   string
}

// UsedKey returns the ID of the key object this key ring was unlocked with
// (or last added by ChangeKey).
func (r *Keyring) UsedKey() string { return r.used }

func newKeyring(secret []byte, used string) (*Keyring, error) {
	var idKey []byte
	if len(secret) > masterKeySize {
		idKey = secret[masterKeySize:]
	}
	keys, err := deriveSubkeys2(secret[:masterKeySize], idKey)
	if err != nil {
		return nil, err
	}
	return &Keyring{secret: secret, keys: keys, used: used}, nil
}

// InitKeyring makes a new random master key and its first key object, for
// cred. It refuses (ErrExists) if the store holds key objects already.
func InitKeyring(ctx context.Context, store Store, cred Credential, opts KeyOptions) (*Keyring, error) {
	return initKeyring(ctx, store, cred, opts, nil)
}

// initKeyring is InitKeyring that keeps idKey as the ID key, when not nil:
// for converting an encrypted version 1 repository without renaming blobs.
func initKeyring(ctx context.Context, store Store, cred Credential, opts KeyOptions, idKey []byte) (*Keyring, error) {
	names, err := keyObjectNames(ctx, store)
	if err != nil {
		return nil, err
	}
	if len(names) > 0 {
		return nil, fmt.Errorf("%s holds %d key objects: %w", keysPrefix, len(names), ErrExists)
	}
	ring, err := newRandomKeyring(idKey)
	if err != nil {
		return nil, err
	}
	if ring.used, err = ring.AddKey(ctx, store, cred, opts); err != nil {
		return nil, err
	}
	return ring, nil
}

// newRandomKeyring makes a key ring of a new random master key, with idKey
// as its ID key when not nil; it has no key object yet.
func newRandomKeyring(idKey []byte) (*Keyring, error) {
	secret := make([]byte, masterKeySize, masterKeySize+len(idKey))
	_, _ = rand.Read(secret) // crypto/rand.Read does not fail (Go 1.24 on)
	secret = append(secret, idKey...)
	return newKeyring(secret, "")
}

// UnlockKeyring opens the key ring with cred: it tries every key object
// made for that kind of credential until one opens. A credential that opens
// none is ErrWrongKey; key objects that cannot be read or decoded are named
// in that error too, and do not stop the others from being tried.
func UnlockKeyring(ctx context.Context, store Store, cred Credential) (*Keyring, error) {
	if cred.key == nil && cred.password == nil {
		return nil, errors.New("unlock: no credential: use KeyCredential or PasswordCredential")
	}
	names, err := keyObjectNames(ctx, store)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s: no key objects: %w", keysPrefix, ErrNotFound)
	}
	var damaged []error
	tried := 0
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		o, err := readKeyObject(ctx, store, name)
		if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrUnsupportedVersion) || errors.Is(err, ErrNotFound) {
			// A damaged or newer key object, or one removed since the
			// listing: another may still open.
			damaged = append(damaged, err)
			continue
		}
		if err != nil {
			return nil, err
		}
		if o.KDF != cred.kdf() {
			continue
		}
		tried++
		secret, err := o.unwrap(name, cred)
		if errors.Is(err, ErrWrongKey) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return newKeyring(secret, strings.TrimPrefix(name, keysPrefix))
	}
	err = fmt.Errorf("none of the %d key objects made for a %s opens with this one: %w", tried, cred.describe(), ErrWrongKey)
	return nil, errors.Join(append([]error{err}, damaged...)...)
}

// AddKey writes a key object that wraps this key ring's master key for cred,
// reads it back and checks that cred opens it, and returns its ID.
func (r *Keyring) AddKey(ctx context.Context, store Store, cred Credential, opts KeyOptions) (string, error) {
	o, err := newKeyObject(cred, opts)
	if err != nil {
		return "", err
	}
	var idBytes [keyObjectIDSize]byte
	_, _ = rand.Read(idBytes[:]) // crypto/rand.Read does not fail (Go 1.24 on)
	id := hex.EncodeToString(idBytes[:])
	name := keyObjectName(id)
	aead, err := chacha20poly1305.NewX(o.kek(cred))
	if err != nil {
		return "", err
	}
	ad, err := o.associatedData(name)
	if err != nil {
		return "", err
	}
	o.WrappedKey = seal2(aead, nil, r.secret, ad)
	data, err := o.encode()
	if err != nil {
		return "", fmt.Errorf("encode %s: %w", name, err)
	}
	if err := store.PutIfAbsent(ctx, name, data); err != nil {
		return "", fmt.Errorf("write key object: %w", err)
	}
	// What a later unlock will read must open: check it before anyone
	// relies on the new key (ChangeKey removes the old one next).
	back, err := readKeyObject(ctx, store, name)
	if err != nil {
		return "", fmt.Errorf("read back the new key object: %w", err)
	}
	secret, err := back.unwrap(name, cred)
	if err != nil {
		return "", fmt.Errorf("read back the new key object: %w", err)
	}
	if subtle.ConstantTimeCompare(secret, r.secret) != 1 {
		return "", corrupt(name, "read back, it wraps another master key")
	}
	return id, nil
}

func newKeyObject(cred Credential, opts KeyOptions) (*keyObject, error) {
	if cred.key == nil && cred.password == nil {
		return nil, errors.New("no credential: use KeyCredential or PasswordCredential")
	}
	host := opts.Host
	if host == "" {
		host, _ = os.Hostname()
		host = strings.Map(func(r rune) rune {
			if unicode.IsPrint(r) {
				return r
			}
			return -1
		}, strings.ToValidUTF8(host, ""))
		if len(host) > keyLabelMaxLen {
			host = host[:keyLabelMaxLen]
		}
	}
	if err := checkKeyText("label", opts.Label); err != nil {
		return nil, err
	}
	if err := checkKeyText("host", host); err != nil {
		return nil, err
	}
	o := &keyObject{
		Version: keyObjectFormat,
		KDF:     cred.kdf(),
		Salt:    make([]byte, keySaltSize),
		Created: time.Now().UTC().Round(0),
		Host:    host,
		Label:   opts.Label,
	}
	_, _ = rand.Read(o.Salt) // crypto/rand.Read does not fail (Go 1.24 on)
	if o.KDF == KDFArgon2id {
		p := opts.Argon2
		if p == (Argon2Params{}) {
			p = DefaultArgon2Params
		}
		if err := p.check(); err != nil {
			return nil, err
		}
		o.Argon2 = &p
	}
	return o, nil
}

// RemoveKey deletes the key object id. It refuses to delete the key this
// key ring was unlocked with (ErrKeyInUse) and the last key object that
// still decodes (ErrLastKey); a missing one is ErrNotFound.
func (r *Keyring) RemoveKey(ctx context.Context, store Store, id string) error {
	if id == r.used {
		return fmt.Errorf("key %s: %w (unlock with another credential to remove it)", id, ErrKeyInUse)
	}
	if err := checkKeyObjectID(id); err != nil {
		return err
	}
	names, err := keyObjectNames(ctx, store)
	if err != nil {
		return err
	}
	name := keyObjectName(id)
	if !slices.Contains(names, name) {
		return fmt.Errorf("key %s: %w", id, ErrNotFound)
	}
	others := 0
	for _, n := range names {
		if n == name {
			continue
		}
		if _, err := readKeyObject(ctx, store, n); err == nil {
			others++
		} else if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupportedVersion) && !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	if others == 0 {
		return fmt.Errorf("key %s: %w", id, ErrLastKey)
	}
	if err := store.Delete(ctx, name); err != nil {
		return fmt.Errorf("remove key %s: %w", id, err)
	}
	return nil
}

// ChangeKey replaces the key this key ring was unlocked with by one for
// cred (a passwd): it adds the new key object, checks that it opens, and
// only then deletes the old one, so that there is never a moment without
// a working key. If the deletion fails, the new key is in place and in use,
// the old one still opens too, and the error says so.
func (r *Keyring) ChangeKey(ctx context.Context, store Store, cred Credential, opts KeyOptions) (string, error) {
	old := r.used
	id, err := r.AddKey(ctx, store, cred, opts)
	if err != nil {
		return "", err
	}
	r.used = id
	if old == "" {
		return id, nil
	}
	if err := r.RemoveKey(ctx, store, old); err != nil {
		return id, fmt.Errorf("new key %s is in place, but old key %s still opens the repository: %w", id, old, err)
	}
	return id, nil
}

// KeyInfo describes a key object, as ListKeys reports it.
type KeyInfo struct {
	ID      string
	KDF     string
	Created time.Time
	Host    string
	Label   string
	// Err says why the object could not be read or decoded; the other
	// fields but ID are then empty.
	Err error
}

// ListKeys describes every key object, oldest first. It needs no
// credential: a key object's metadata is not secret (its wrapped key is).
func ListKeys(ctx context.Context, store Store) ([]KeyInfo, error) {
	names, err := keyObjectNames(ctx, store)
	if err != nil {
		return nil, err
	}
	var infos []KeyInfo
	for _, name := range names {
		info := KeyInfo{ID: strings.TrimPrefix(name, keysPrefix)}
		o, err := readKeyObject(ctx, store, name)
		switch {
		case errors.Is(err, ErrNotFound):
			continue // removed since the listing
		case errors.Is(err, ErrCorrupt) || errors.Is(err, ErrUnsupportedVersion):
			info.Err = err
		case err != nil:
			return nil, err
		default:
			info.KDF, info.Created, info.Host, info.Label = o.KDF, o.Created, o.Host, o.Label
		}
		infos = append(infos, info)
	}
	slices.SortStableFunc(infos, func(a, b KeyInfo) int { return a.Created.Compare(b.Created) })
	return infos, nil
}

// keyObjectNames lists the key objects' names, sorted; objects under keys/
// whose names are not key object names are not key objects, and are left
// alone.
func keyObjectNames(ctx context.Context, store Store) ([]string, error) {
	var names []string
	err := store.List(ctx, keysPrefix, func(info ObjectInfo) error {
		if checkKeyObjectID(strings.TrimPrefix(info.Name, keysPrefix)) == nil {
			names = append(names, info.Name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", keysPrefix, err)
	}
	slices.Sort(names)
	return names, nil
}

func checkKeyObjectID(id string) error {
	if len(id) != 2*keyObjectIDSize || strings.ToLower(id) != id {
		return fmt.Errorf("key ID %q: want %d lower-case hex digits: %w", id, 2*keyObjectIDSize, ErrInvalidName)
	}
	if _, err := hex.DecodeString(id); err != nil {
		return fmt.Errorf("key ID %q: want %d lower-case hex digits: %w", id, 2*keyObjectIDSize, ErrInvalidName)
	}
	return nil
}

func readKeyObject(ctx context.Context, store Store, name string) (*keyObject, error) {
	data, err := store.Get(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("read key object: %w", err)
	}
	return decodeKeyObject(name, data)
}
