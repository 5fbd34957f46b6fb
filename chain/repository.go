package chain

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/semaphore"
)

// Repository is an open repository: its config, its index, and the store.
// It is safe for concurrent use: creates run in parallel with each other,
// while GC waits for them and they wait for GC.
type Repository struct {
	// store is what the repository reads and writes through: raw itself,
	// or for an encrypted version 2 repository a sealedStore over it, which
	// seals and opens every object but packs, keys/ and the config.
	store  Store
	raw    Store
	config Config

	// The in-process side of the repository lock (see lockLocal): shared
	// by writers and verify, exclusive for GC and repair.
	localOnce sync.Once
	local     *semaphore.Weighted

	busyMu sync.Mutex
	busy   map[string]string // collection -> operation holding its lock here

	// headsMu: one update of a heads record at a time in this process
	// (heads.go); other processes' updates are caught by the record's set.
	headsMu sync.Mutex

	idxMu sync.Mutex
	idx   blobIndex
	// reloadMu: one reload at a time when reads find the index out of date.
	reloadMu sync.Mutex

	keys *keys // an encrypted version 1 repository's keys, else nil
	// ring is an encrypted version 2 repository's key ring, else nil.
	// ringMu guards which key object it was unlocked with (ChangeKey).
	ring   *Keyring
	ringMu sync.Mutex

	logger atomic.Pointer[slog.Logger] // see SetLogger
}

// newRepository is the Repository over store with cfg and its keys (at
// most one of k and ring); its index is not loaded.
func newRepository(store Store, cfg Config, k *keys, ring *Keyring) *Repository {
	r := &Repository{store: store, raw: store, config: cfg, keys: k, ring: ring, idx: newUnloadedIndex()}
	if ring != nil {
		r.store = newSealedStore(store, ring.keys)
	}
	if cfg.Version == FormatVersion2 {
		r.idx = newUnloadedIndexV2Set()
	}
	return r
}

// Init writes a new repository's config into store. It refuses a store that
// already holds a repository. With a key (KeySize bytes), the repository is
// encrypted: a version 1 repository with the key itself (see crypt.go), a
// version 2 one with a key ring whose first key object the key opens (see
// InitWithCredential); nil makes a plain one. cfg.Version is FormatVersion
// or FormatVersion2.
func Init(ctx context.Context, store Store, cfg Config, key []byte) (*Repository, error) {
	if key != nil && cfg.Version == FormatVersion2 {
		cred, err := KeyCredential(key)
		if err != nil {
			return nil, fmt.Errorf("init repository: %w", err)
		}
		return InitWithCredential(ctx, store, cfg, cred, KeyOptions{})
	}
	var k *keys
	if key != nil {
		var err error
		if k, err = deriveKeys(key); err != nil {
			return nil, fmt.Errorf("init repository: %w", err)
		}
		cfg.ChunkHash, cfg.Encryption, cfg.KeyCheck = "blake3-256-keyed", encryptionV1, k.checkValue()
	}
	if cfg.Version != FormatVersion && cfg.Version != FormatVersion2 {
		return nil, fmt.Errorf("init repository: config version %d: %w", cfg.Version, ErrUnsupportedVersion)
	}
	data, err := jsonIndent(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := decodeConfig(data); err != nil {
		return nil, fmt.Errorf("init repository: %w", err)
	}
	// Created only: of two processes that init one store at once, one wins
	// and the other fails, instead of both going on with different keys.
	if err := store.PutIfAbsent(ctx, configName, data); err != nil {
		return nil, fmt.Errorf("init repository: %w", err)
	}
	r := newRepository(store, cfg, k, nil)
	r.idx = r.newIndex()
	return r, nil
}

// InitWithCredential writes a new encrypted repository into store, opened
// by cred (KeyCredential or PasswordCredential). A version 2 repository
// (cfg.Version FormatVersion2) gets a key ring: a random master key, and a
// key object (keys/ID, described by opts) that wraps it for cred; its
// config carries a MAC under the master key. A version 1 repository takes
// only a key credential, used as Init uses a key.
//
// The config is written first and decides, as for Init, which of two
// processes initialising one store at once goes on; the key object follows.
// A crash between the two leaves a config that no credential opens (Open
// says there are no key objects): nothing was stored in it yet, and the
// store can be cleared and initialised again.
func InitWithCredential(ctx context.Context, store Store, cfg Config, cred Credential, opts KeyOptions) (*Repository, error) {
	if cfg.Version != FormatVersion2 {
		if cred.key == nil {
			return nil, fmt.Errorf("init repository: format version %d is encrypted with a key, not a password (format version 2 takes either): %w", cfg.Version, ErrUnsupportedVersion)
		}
		return Init(ctx, store, cfg, cred.key)
	}
	return initEncrypted2(ctx, store, cfg, cred, opts, nil)
}

// initEncrypted2 is InitWithCredential for version 2, whose key ring keeps
// idKey as its ID key when not nil: a repository converted from an
// encrypted version 1 one keeps version 1's, so that no blob is renamed
// (see deriveSubkeys2).
func initEncrypted2(ctx context.Context, store Store, cfg Config, cred Credential, opts KeyOptions, idKey []byte) (*Repository, error) {
	if cred.key == nil && cred.password == nil {
		return nil, errors.New("init repository: no credential: use KeyCredential or PasswordCredential")
	}
	names, err := keyObjectNames(ctx, store)
	if err != nil {
		return nil, fmt.Errorf("init repository: %w", err)
	}
	if len(names) > 0 {
		return nil, fmt.Errorf("init repository: %s holds %d key objects: %w", keysPrefix, len(names), ErrExists)
	}
	ring, err := newRandomKeyring(idKey)
	if err != nil {
		return nil, fmt.Errorf("init repository: %w", err)
	}
	cfg.Version, cfg.ChunkHash, cfg.Encryption, cfg.KeyCheck = FormatVersion2, "blake3-256-keyed", encryptionV2, ""
	data, err := jsonIndent(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := decodeConfig(data); err != nil {
		return nil, fmt.Errorf("init repository: %w", err)
	}
	if data, err = ring.keys.signConfig(data); err != nil {
		return nil, fmt.Errorf("init repository: %w", err)
	}
	if err := store.PutIfAbsent(ctx, configName, data); err != nil {
		return nil, fmt.Errorf("init repository: %w", err)
	}
	if ring.used, err = ring.AddKey(ctx, store, cred, opts); err != nil {
		return nil, fmt.Errorf("init repository: the config is written, but its first key is not (no credential opens the repository; clear the store and init again): %w", err)
	}
	r := newRepository(store, cfg, nil, ring)
	r.idx = r.newIndex()
	return r, nil
}

// Open reads the repository in store: its config, and nothing else. The
// index is read when an operation first needs it (a writer, a reader lock,
// a blob read, or LoadIndex), so listing restore points costs no more in a
// repository of millions of chunks than in an empty one. An encrypted
// repository needs its key (ErrKeyRequired without, ErrWrongKey with
// another); a plain one refuses a key. An encrypted version 2 repository
// opened with a key opens with a key object of kdf "none" (see
// OpenWithCredential, which also takes a password).
func Open(ctx context.Context, store Store, key []byte) (*Repository, error) {
	var cred Credential
	if key != nil {
		cred = Credential{key: key}
	}
	return OpenWithCredential(ctx, store, cred)
}

// OpenWithCredential is Open with a credential: the zero Credential for a
// plain repository, a KeyCredential for an encrypted one of either version,
// or a PasswordCredential for an encrypted version 2 one. Version 2 unlocks
// its key ring with it (ErrWrongKey if no key object opens) and then checks
// the config's MAC: a config changed by someone without the key is
// ErrCorrupt naming the config.
func OpenWithCredential(ctx context.Context, store Store, cred Credential) (*Repository, error) {
	data, err := store.Get(ctx, configName)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("open repository: no config (not a diskpoint repository?): %w", ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open repository: %w", err)
	}
	cfg, err := decodeConfig(data)
	if err != nil {
		return nil, fmt.Errorf("open repository: %w", err)
	}
	given := cred.key != nil || cred.password != nil
	var k *keys
	var ring *Keyring
	switch {
	case cfg.Encryption != "" && !given:
		return nil, fmt.Errorf("open repository: %w", ErrKeyRequired)
	case cfg.Encryption == "" && given:
		return nil, fmt.Errorf("open repository: it is not encrypted, but a key was given")
	case cfg.Encryption == encryptionV1:
		if cred.key == nil {
			return nil, fmt.Errorf("open repository: a format version 1 repository is opened with its key, not a password: %w", ErrWrongKey)
		}
		if k, err = deriveKeys(cred.key); err != nil {
			return nil, fmt.Errorf("open repository: %w", err)
		}
		if !k.matches(cfg.KeyCheck) {
			return nil, fmt.Errorf("open repository: %w", ErrWrongKey)
		}
	case cfg.Encryption == encryptionV2:
		if cred.key != nil && len(cred.key) != KeySize {
			return nil, fmt.Errorf("open repository: key of %d bytes, want %d: %w", len(cred.key), KeySize, ErrWrongKey)
		}
		ring, err = UnlockKeyring(ctx, store, cred)
		if errors.Is(err, ErrNotFound) && !errors.Is(err, ErrWrongKey) {
			// The config is there, and keys/ is empty: not a missing
			// repository, but one whose key objects are gone (or whose
			// init stopped before it wrote the first).
			return nil, fmt.Errorf("open repository: %w", corrupt(keysPrefix, "no key objects: the repository is encrypted, but nothing holds its key (%v)", err))
		}
		if err != nil {
			return nil, fmt.Errorf("open repository: %w", err)
		}
		if err := ring.keys.verifyConfig(data); err != nil {
			return nil, fmt.Errorf("open repository: %w", err)
		}
	}
	return newRepository(store, cfg, k, ring), nil
}

// LoadIndex reads the index, unless this Repository has read it already.
// HasBlob and LocateBlob call it and answer false if it fails; call it
// first to see why. Operations that need the index (writers, readers, GC,
// verify) read it themselves.
func (r *Repository) LoadIndex(ctx context.Context) error {
	if !r.index().isUnloaded() {
		return nil
	}
	return r.refreshIndex(ctx)
}

// Config returns the repository's settings.
func (r *Repository) Config() Config { return r.config }

// Store returns the store the repository lives in, whose objects are as
// stored: sealed, in an encrypted version 2 repository.
func (r *Repository) Store() Store { return r.raw }

// Close closes the store. The repository must not be used afterwards; what
// it wrote is durable already (writers flush on commit).
func (r *Repository) Close() error { return r.store.Close() }

func (r *Repository) localLock() *semaphore.Weighted {
	r.localOnce.Do(func() { r.local = semaphore.NewWeighted(localLockWeight) })
	return r.local
}

func (r *Repository) index() blobIndex {
	r.idxMu.Lock()
	defer r.idxMu.Unlock()
	return r.idx
}

// refreshIndex picks up index files other processes wrote or removed.
func (r *Repository) refreshIndex(ctx context.Context) error {
	idx, err := r.index().refresh(ctx, r.store, r.Logger())
	if err != nil {
		return err
	}
	r.setIndex(idx)
	return nil
}

// setIndex makes idx the index reads and writers use from now on, unless
// an index that began to load after idx did is installed already: two
// loads racing (a reader's reload, a writer's refresh) must not put back
// an index from before a GC, which would let a create deduplicate against
// blobs the GC removed.
func (r *Repository) setIndex(idx blobIndex) {
	r.idxMu.Lock()
	if r.idx == nil || idx.generation() >= r.idx.generation() {
		r.idx = idx
	}
	r.idxMu.Unlock()
}

// HasBlob reports whether the index holds the blob, reading the index
// first if Open has not (LoadIndex does so and reports a failure). A
// version 2 index is read as it is looked up: a lookup that fails, or an
// index that cannot be read, reports false.
func (r *Repository) HasBlob(id ID) bool {
	if r.LoadIndex(context.Background()) != nil {
		return false
	}
	ok, err := r.hasBlob(context.Background(), id)
	return ok && err == nil
}

// hasBlob reports whether the index holds the blob; an error is a failed
// read of the index, not a missing blob.
func (r *Repository) hasBlob(ctx context.Context, id ID) (bool, error) {
	idx := r.index()
	ok, err := idx.holds(ctx, id)
	if damagedIndexFile(err) == "" {
		return ok, err
	}
	if rerr := r.reloadIndex(ctx, idx, err); rerr != nil {
		return false, fmt.Errorf("%w, and reloading the index to look again failed: %w", err, rerr)
	}
	return r.index().holds(ctx, id)
}

// findBlob looks id up in idx. A version 2 index file found damaged past
// its tables is set aside, as version 1 skips a damaged index file: the
// index is loaded again without it (its packs recovered from their own
// headers), and the lookup is tried there.
func (r *Repository) findBlob(ctx context.Context, idx blobIndex, id ID) (packEntry, ID, bool, error) {
	e, pack, ok, err := idx.find(ctx, id)
	if damagedIndexFile(err) == "" {
		return e, pack, ok, err
	}
	if rerr := r.reloadIndex(ctx, idx, err); rerr != nil {
		return e, pack, false, fmt.Errorf("%w, and reloading the index to look again failed: %w", err, rerr)
	}
	return r.index().find(ctx, id)
}

// BlobLocation is where a blob's stored bytes are.
type BlobLocation struct {
	Pack   string // the pack's object name
	Offset int64
	Length int64
}

// LocateBlob says which pack holds the blob and where: for tools that
// inspect or repair a repository. Like HasBlob, it reads the index first
// if need be (see LoadIndex), and a lookup that fails reports false.
func (r *Repository) LocateBlob(id ID) (BlobLocation, bool) {
	if r.LoadIndex(context.Background()) != nil {
		return BlobLocation{}, false
	}
	e, pack, ok, err := r.index().find(context.Background(), id)
	if !ok || err != nil {
		return BlobLocation{}, false
	}
	return BlobLocation{Pack: packName(pack), Offset: int64(e.Offset), Length: int64(e.Length)}, true
}

// ReadBlob returns the plaintext of the blob id of type t, reusing dst's
// memory. It checks the plaintext against id: a mismatch, or a blob that
// cannot be decoded, is a *CorruptError naming the blob and its pack.
//
// A blob that is not where this process's index says (its pack is gone, or
// the index does not list it) may have been moved by a GC elsewhere since
// the index was loaded, and one that reads back damaged may have been
// repaired elsewhere: the index is reloaded and the read tried once more,
// so a moved blob is never reported as damage, nor a repaired one.
func (r *Repository) ReadBlob(ctx context.Context, t BlobType, id ID, dst []byte) ([]byte, error) {
	idx := r.index()
	data, err := r.readBlobIn(ctx, idx, t, id, dst)
	if err != nil && mayHaveMoved(err) && ctx.Err() == nil {
		if rerr := r.reloadIndex(ctx, idx, err); rerr != nil {
			return nil, fmt.Errorf("%s blob %s: %w, and reloading the index to look again failed: %w", t, id, err, rerr)
		}
		data, err = r.readBlobIn(ctx, r.index(), t, id, dst)
	}
	switch {
	case errors.Is(err, errNotIndexed):
		// Blobs are read because a block map or manifest references them:
		// one that is nowhere is damage, not a wrong name.
		return nil, corrupt(fmt.Sprintf("%s blob %s", t, id), "missing: no index or pack has it")
	case errors.Is(err, ErrNotFound):
		// Even a fresh index names a pack the store lacks. No bytes were
		// read, so it is not ErrCorrupt: it stays ErrNotFound, naming the
		// blob and the pack (verify reports it as damage).
		return nil, fmt.Errorf("%s blob %s: %w", t, id, err)
	}
	return data, err
}

// errNotIndexed: the index does not list the blob.
var errNotIndexed = errors.New("not in the index")

// mayHaveMoved reports whether a read failed in a way a GC or a repair
// elsewhere, moving or removing packs, could explain.
func mayHaveMoved(err error) bool {
	return errors.Is(err, errNotIndexed) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrCorrupt)
}

// reloadIndex loads the whole index again, unless another reader has done
// so since stale was current. cause is the failure that made the caller
// look again: a version 2 index file it names as damaged is set aside in
// the new load (see indexV2Set.setAside).
func (r *Repository) reloadIndex(ctx context.Context, stale blobIndex, cause error) error {
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	if r.index() != stale {
		return nil
	}
	var idx blobIndex
	var err error
	if x, ok := stale.(*indexV2Set); ok {
		idx, err = loadIndexV2Set(ctx, r.store, r.Logger(), x.setAsideWith(damagedIndexFile(cause)))
	} else {
		idx, err = r.loadIndex(ctx)
	}
	if err != nil {
		return err
	}
	r.setIndex(idx)
	return nil
}

// readBlobIn reads the blob where idx says it is.
func (r *Repository) readBlobIn(ctx context.Context, idx blobIndex, t BlobType, id ID, dst []byte) ([]byte, error) {
	e, pack, ok, err := r.findBlob(ctx, idx, id)
	if err != nil {
		return nil, fmt.Errorf("%s blob %s: look it up: %w", t, id, err)
	}
	if !ok {
		return nil, errNotIndexed
	}
	if e.Type != t {
		return nil, corrupt(fmt.Sprintf("%s blob %s in pack %s", t, id, pack), "index says it is a %s blob", e.Type)
	}
	return r.readBlobAt(ctx, pack, e, dst)
}

// readBlobAt reads the blob that entry e places in pack, checking its hash.
// A store failure (the pack missing, EIO, a timeout) is returned as it is,
// wrapped with the blob and pack it was reading: only bytes that were read
// and are wrong, or a pack shorter than the index says, are ErrCorrupt.
func (r *Repository) readBlobAt(ctx context.Context, pack ID, e packEntry, dst []byte) ([]byte, error) {
	// Named only for an error: formatting two IDs per blob read showed in
	// a copy's profile.
	object := func() string { return fmt.Sprintf("%s blob %s in pack %s", e.Type, e.ID, pack) }
	buf := getBuffer(int(e.Length))
	defer putBuffer(buf)
	if e.Type == TreeBlob {
		ctx = withTreePack(ctx)
	}
	if err := r.store.ReadAt(ctx, packName(pack), buf, int64(e.Offset)); err != nil {
		return nil, readError(object(), err)
	}
	raw, err := r.decodeStored(dst, buf, e)
	if err != nil {
		return nil, corrupt(object(), "%v", err)
	}
	return raw, nil
}

// readError classifies a failed ReadAt of a pack. The pack ends before the
// bytes the index places in it: damage (the store says the object is
// shorter, and not that the read broke off). Anything else is the store's
// failure, not the data's.
func readError(object string, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrTransient) {
		return corrupt(object, "the pack is shorter than the index says: %v", err)
	}
	return fmt.Errorf("read %s: %w", object, err)
}

// decodeStored turns a blob's stored bytes back into its plaintext: opens
// the seal (encrypted repositories), decompresses, and checks the ID.
func (r *Repository) decodeStored(dst, stored []byte, e packEntry) ([]byte, error) {
	if r.Encrypted() {
		// Opened into a pooled buffer: decompressBlob copies out of it, so
		// a restore does not leave a blob's worth of garbage per block.
		buf := getBuffer(len(stored))
		defer putBuffer(buf)
		opened, err := r.openBlob(buf[:0], e.ID, stored)
		if err != nil {
			return nil, err
		}
		stored = opened
	}
	raw, err := decompressBlob(dst, stored, e.Compressed, int(e.RawLength))
	if err != nil {
		return nil, err
	}
	if r.HashBlob(raw) != e.ID {
		return nil, errors.New("content does not match its ID")
	}
	return raw, nil
}

// buffers pools byte slices for stored blobs and packs.
var buffers sync.Pool

func getBuffer(n int) []byte {
	if b, ok := buffers.Get().(*[]byte); ok && cap(*b) >= n {
		return (*b)[:n]
	}
	return make([]byte, n)
}

func putBuffer(b []byte) {
	b = b[:0]
	buffers.Put(&b)
}
