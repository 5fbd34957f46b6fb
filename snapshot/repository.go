package snapshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/diskpoint/diskpoint/chain"
)

// Errors callers test for with errors.Is. They are chain's sentinels.
var (
	ErrNotFound           = chain.ErrNotFound
	ErrCorrupt            = chain.ErrCorrupt
	ErrLocked             = chain.ErrLocked
	ErrExists             = chain.ErrExists
	ErrInvalidName        = chain.ErrInvalidName
	ErrUnsupportedVersion = chain.ErrUnsupportedVersion
)

// Repository is an open diskpoint repository. It is safe for concurrent use.
type Repository struct {
	chain *chain.Repository
}

// InitOptions configure a new repository.
type InitOptions struct {
	// BlockSize is the size of the blocks disks are cut into: a power of two
	// from 16 KiB to 16 MiB; 0 means chain.DefaultBlockSize.
	BlockSize int
	// Key, if set (chain.KeySize bytes, see chain.NewKey), makes the
	// repository encrypted: chunks, block maps, manifests, state and logs
	// sealed, chunks named by keyed BLAKE3. In format version 1 the key
	// is the repository's key (AES-256-GCM); in version 2 it opens the
	// first key object of the repository's key ring (XChaCha20-Poly1305
	// under a random master key; pack headers, index files and locks are
	// sealed too). Keep it safe: without it nothing can be restored.
	Key []byte
	// Password, if set, makes a format version 2 repository encrypted, as
	// Key does, with a password instead: its key object is opened by the
	// Argon2id hash of the password. At most one of Key and Password.
	Password string
	// Argon2 are the Argon2id parameters of Password's key object; the
	// zero value means chain.DefaultArgon2Params.
	Argon2 chain.Argon2Params
	// KeyLabel is an optional note on the first key object, shown by
	// Repository.Keys.
	KeyLabel string
	// Format is the repository format version: 0 or chain.FormatVersion
	// (1, the default), or chain.FormatVersion2, whose index is read a
	// bucket at a time instead of being held in memory, and whose
	// encryption (Key or Password) is a key ring of several credentials.
	Format int
}

// ErrWrongKey and ErrKeyRequired: opening an encrypted repository with
// another key, or none.
var (
	ErrWrongKey    = chain.ErrWrongKey
	ErrKeyRequired = chain.ErrKeyRequired
)

// Init creates a repository in directory dir (created if missing; it must
// not already hold a repository).
func Init(ctx context.Context, dir string, opts InitOptions) (*Repository, error) {
	store, err := chain.NewLocalStore(dir)
	if err != nil {
		return nil, err
	}
	r, err := InitStore(ctx, store, opts)
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", dir, err)
	}
	return r, nil
}

// InitStore creates a repository in any chain.Store.
func InitStore(ctx context.Context, store chain.Store, opts InitOptions) (*Repository, error) {
	cfg, err := chain.NewConfig(opts.BlockSize)
	if err != nil {
		return nil, err
	}
	if opts.Format != 0 {
		cfg.Version = opts.Format
	}
	var cr *chain.Repository
	switch {
	case opts.Key != nil && opts.Password != "":
		return nil, errors.New("init repository: a key or a password, not both")
	case opts.Key == nil && opts.Password == "":
		cr, err = chain.Init(ctx, store, cfg, nil)
	default:
		cred, cerr := credential(opts.Key, opts.Password)
		if cerr != nil {
			return nil, fmt.Errorf("init repository: %w", cerr)
		}
		cr, err = chain.InitWithCredential(ctx, store, cfg, cred, chain.KeyOptions{Label: opts.KeyLabel, Argon2: opts.Argon2})
	}
	if err != nil {
		return nil, err
	}
	return &Repository{chain: cr}, nil
}

// credential is the credential of a key or a password (one of them set).
func credential(key []byte, password string) (chain.Credential, error) {
	if password != "" {
		return chain.PasswordCredential(password)
	}
	return chain.KeyCredential(key)
}

// Open opens the repository in directory dir.
func Open(ctx context.Context, dir string) (*Repository, error) {
	return OpenWithKey(ctx, dir, nil)
}

// OpenWithKey opens the repository in directory dir with its key (nil for
// a repository that is not encrypted).
func OpenWithKey(ctx context.Context, dir string, key []byte) (*Repository, error) {
	var cred chain.Credential
	if key != nil {
		var err error
		if cred, err = chain.KeyCredential(key); err != nil {
			return nil, fmt.Errorf("repository %s: %w", dir, err)
		}
	}
	return OpenWithCredential(ctx, dir, cred)
}

// OpenWithPassword opens the encrypted format version 2 repository in
// directory dir with a password one of its key objects was made for.
func OpenWithPassword(ctx context.Context, dir, password string) (*Repository, error) {
	cred, err := chain.PasswordCredential(password)
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", dir, err)
	}
	return OpenWithCredential(ctx, dir, cred)
}

// OpenWithCredential opens the repository in directory dir with cred: the
// zero chain.Credential for a plain repository, chain.KeyCredential or
// chain.PasswordCredential for an encrypted one (see
// chain.OpenWithCredential).
func OpenWithCredential(ctx context.Context, dir string, cred chain.Credential) (*Repository, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("repository %s does not exist: %w", dir, ErrNotFound)
		}
		return nil, fmt.Errorf("repository %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("repository %s: not a directory", dir)
	}
	store, err := chain.NewLocalStore(dir)
	if err != nil {
		return nil, err
	}
	r, err := OpenStoreWithCredential(ctx, store, cred)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("repository %s: %w", dir, err)
	}
	return r, nil
}

// OpenStore opens the repository in any chain.Store, with its key or nil.
func OpenStore(ctx context.Context, store chain.Store, key []byte) (*Repository, error) {
	cr, err := chain.Open(ctx, store, key)
	if err != nil {
		return nil, err
	}
	return &Repository{chain: cr}, nil
}

// OpenStoreWithCredential opens the repository in any chain.Store with
// cred (see OpenWithCredential).
func OpenStoreWithCredential(ctx context.Context, store chain.Store, cred chain.Credential) (*Repository, error) {
	cr, err := chain.OpenWithCredential(ctx, store, cred)
	if err != nil {
		return nil, err
	}
	return &Repository{chain: cr}, nil
}

// Chain returns the repository's storage layer, for tools that work on the
// format itself.
func (r *Repository) Chain() *chain.Repository { return r.chain }

// SetLogger sets where the repository logs hook runs as they happen and
// what it works around (a damaged index file, a capture released after its
// create returned); nil, the default, means silent. The library never logs
// to slog's global default.
func (r *Repository) SetLogger(l *slog.Logger) { r.chain.SetLogger(l) }

// Close releases the repository's store. Use the Repository no more
// afterwards.
func (r *Repository) Close() error { return r.chain.Close() }

// Config returns the repository's settings.
func (r *Repository) Config() chain.Config { return r.chain.Config() }

// Collection returns the collection called name (it need not exist yet: a
// collection exists once it has a restore point). The name is 1 to 255
// letters, digits, '.', '_' or '-', not starting with '.'.
func (r *Repository) Collection(name string) (*Collection, error) {
	if err := chain.CheckName("collection", name); err != nil {
		return nil, err
	}
	return &Collection{repo: r, name: name}, nil
}

// Collections lists the names of the collections that have restore
// points, in order.
func (r *Repository) Collections(ctx context.Context) ([]string, error) {
	return r.chain.ListCollections(ctx)
}

// Unlock removes stale locks, those of operations that died; with all, it
// removes every lock, which is only safe when no diskpoint runs anywhere.
// See chain.Repository.Unlock.
func (r *Repository) Unlock(ctx context.Context, all bool) (int, error) {
	return r.chain.Unlock(ctx, all)
}

// Keys describes an encrypted format version 2 repository's key objects,
// oldest first; UsedKey says which one opened this Repository.
func (r *Repository) Keys(ctx context.Context) ([]chain.KeyInfo, error) { return r.chain.Keys(ctx) }

// UsedKey returns the ID of the key object this Repository was opened
// with, or "" for a repository without a key ring.
func (r *Repository) UsedKey() string { return r.chain.UsedKey() }

// AddKey adds a credential to an encrypted format version 2 repository and
// returns its key's ID (see chain.Repository.AddKey). It holds the
// repository's exclusive lock, as GC does.
func (r *Repository) AddKey(ctx context.Context, cred chain.Credential, opts chain.KeyOptions) (string, error) {
	return r.chain.AddKey(ctx, cred, opts)
}

// RemoveKey removes the key id; never the one in use, nor the last one
// (see chain.Repository.RemoveKey).
func (r *Repository) RemoveKey(ctx context.Context, id string) error {
	return r.chain.RemoveKey(ctx, id)
}

// ChangeKey replaces the credential in use by cred, adding the new key
// before it removes the old one (see chain.Repository.ChangeKey).
func (r *Repository) ChangeKey(ctx context.Context, cred chain.Credential, opts chain.KeyOptions) (string, error) {
	return r.chain.ChangeKey(ctx, cred, opts)
}
