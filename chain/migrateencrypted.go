package chain

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/zeebo/blake3"
	"golang.org/x/crypto/chacha20poly1305"
)

// Converting an encrypted version 1 repository (FORMAT.md, "Migrating an
// encrypted repository"). Every pack is rewritten with its blobs and header
// sealed as version 2 seals them, the index is written as sealed version 2
// files that name the new packs, and every sealed object is sealed again
// under the key ring's metadata key; blob IDs stay as they are, since the
// key ring keeps version 1's ID key. The version 1 repository stays whole
// until the config switch: the new packs and index files have new names,
// the key ring is under keys/ (which version 1 never reads), and objects
// whose names both versions use (manifests, state/, logs/, garbage/) are
// staged under migrateStagePrefix and moved to their names after it.

// migrateStagePrefix holds, for an object whose name both versions use,
// its version 2 seal (made for its own name, so a move is a byte copy)
// until the config switch. After the switch an encrypted version 2
// repository reads an object that still holds its version 1 seal through
// its staged copy (sealedStore.Get), until a rerun moves it.
const migrateStagePrefix = "migrate/"

// contextMigrateNonce derives, from the master key, the key that makes
// the nonces of converted packs: a pack's conversion is a function of its
// version 1 bytes (named by their hash) and the master key, so a rerun
// writes the very pack an interrupted run wrote, under the same name.
const contextMigrateNonce = "diskpoint v2 migrate pack nonces"

// migratePackGrowth is how much longer a blob's seal is in version 2: a
// 24-byte nonce where version 1 has 12.
const migratePackGrowth = sealOverhead2 - sealOverhead

// packConversion is where a version 1 pack went: the version 2 pack, and
// the version 1 offsets of its blobs in pack order (a blob at position i
// moves by i × migratePackGrowth).
type packConversion struct {
	to      ID
	offsets []uint32
}

// encryptedMigration is one run of Migrate over an encrypted repository.
type encryptedMigration struct {
	*migration
	repo   *Repository
	lock   *repoLock
	raw    Store
	ring   *Keyring
	sealed *sealedStore
	nonces [32]byte
	packs  map[ID]packConversion // by version 1 pack
}

// migrateEncrypted converts an encrypted repository whose config (read
// under lock) is cfg: from version 1, or, after an interrupted run's
// switch, finishes the version 2 one. It releases the lock before it
// returns, and leaves r a version 2 repository.
func (r *Repository) migrateEncrypted(ctx context.Context, lock *repoLock, cfg Config, m *migration) error {
	e := &encryptedMigration{migration: m, repo: r, lock: lock, raw: r.raw, packs: map[ID]packConversion{}}
	if cfg.Encryption == encryptionV2 {
		if r.ring == nil {
			return errors.New("another process converted the repository to version 2 since it was opened: open it again (with the same key) and run migrate again")
		}
		e.ring = r.ring
	} else {
		if r.keys == nil {
			return fmt.Errorf("the repository is encrypted: %w", ErrKeyRequired)
		}
		if err := e.refuseReaders(ctx); err != nil {
			return err
		}
		if err := e.keyRing(ctx); err != nil {
			return err
		}
	}
	e.sealed = newSealedStore(e.raw, e.ring.keys)
	blake3.DeriveKey(contextMigrateNonce, e.ring.secret[:masterKeySize], e.nonces[:])
	var err error
	if cfg.Version == FormatVersion {
		err = e.beforeSwitch(ctx, cfg)
	}
	if err == nil {
		err = e.afterSwitch(ctx)
	}
	if cfg.Version == FormatVersion && !e.report.Converted {
		return err // still version 1, as r is
	}
	// Switched, by this run or an earlier one: r must not go on as version
	// 1 even if the rest failed. It changes once the lock is released,
	// whose refresher writes through r's store.
	e.lock.unlock()
	r.useEncryptedVersion2(cfg, e.ring)
	if err != nil {
		return err
	}
	// The staged copy of this run's lock served version 2 readers while
	// the lock object itself was still written in version 1's form.
	// (The lock's context ends with it.)
	if err := e.raw.Delete(context.WithoutCancel(ctx), migrateStagePrefix+lock.name); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("delete the staged copy of the lock: %w", err)
	}
	return nil
}

// keyRing unlocks, with the version 1 key, the key ring an interrupted run
// made, or makes it: a new random master key, with version 1's ID key kept,
// wrapped for the version 1 key (kdf none). It is written before anything
// sealed under it, so that a rerun seals under the same keys; version 1
// never reads keys/, so the version 1 repository still opens with its key.
func (e *encryptedMigration) keyRing(ctx context.Context) error {
	cred, err := KeyCredential(e.repo.keys.user)
	if err != nil {
		return err
	}
	names, err := keyObjectNames(ctx, e.raw)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		e.ring, err = initKeyring(ctx, e.raw, cred, KeyOptions{Label: "converted from format version 1"}, e.repo.keys.id[:])
		if err != nil {
			return fmt.Errorf("make the key ring: %w", err)
		}
		return nil
	}
	if e.ring, err = UnlockKeyring(ctx, e.raw, cred); err != nil {
		return fmt.Errorf("%s holds key objects that the version 1 key does not open (not an interrupted migration's): %w", keysPrefix, err)
	}
	if e.ring.keys.id != e.repo.keys.id {
		return fmt.Errorf("the key ring in %s does not keep this repository's ID key (not an interrupted migration's): %w", keysPrefix, ErrExists)
	}
	return nil
}

// beforeSwitch converts the packs, writes the sealed index files, stages
// the sealed objects, and switches the config.
func (e *encryptedMigration) beforeSwitch(ctx context.Context, cfg Config) error {
	if err := e.convertPacks(ctx); err != nil {
		return err
	}
	e.out, e.v2Magic = e.sealed, sealedFileMagic
	e.convert = e.convertEntry
	if err := e.writeV2Files(ctx); err != nil {
		return err
	}
	if err := e.stageObjects(ctx); err != nil {
		return err
	}
	if lost := e.lock.lost(); lost != nil {
		return fmt.Errorf("the config was not switched: %w", lost)
	}
	cfg.Version, cfg.Encryption, cfg.KeyCheck = FormatVersion2, encryptionV2, ""
	data, err := jsonIndent(cfg)
	if err != nil {
		return err
	}
	if _, err := decodeConfig(data); err != nil {
		return fmt.Errorf("the version 2 config: %w", err)
	}
	if data, err = e.ring.keys.signConfig(data); err != nil {
		return err
	}
	if err := e.raw.Put(ctx, configName, data); err != nil {
		return fmt.Errorf("switch config to version 2: %w", err)
	}
	e.report.Converted = true
	return nil
}

// refuseReaders fails (ErrLocked) while a reader (a restore, an export)
// holds a live lock: the migration deletes every version 1 pack, which a
// reader of the version 1 repository may be reading. A lock this build
// cannot read, or whose seal does not open, is taken as a reader's.
func (e *encryptedMigration) refuseReaders(ctx context.Context) error {
	names, err := listNames(ctx, e.raw, lockPrefix)
	if err != nil {
		return fmt.Errorf("list locks: %w", err)
	}
	now := time.Now()
	for _, name := range names {
		if name == e.lock.name {
			continue
		}
		data, err := e.raw.Get(ctx, name)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read lock: %w", err)
		}
		if e.sealed != nil {
			if plain, err := e.sealed.open(name, data); err == nil {
				data = plain // a version 2 process's lock
			}
		}
		var info LockInfo
		if err := json.Unmarshal(data, &info); err != nil {
			return fmt.Errorf("lock %s cannot be read, so it may be a reader's ('diskpoint unlock -all' removes it once no diskpoint runs): %w", name, ErrLocked)
		}
		if !info.stale(now) {
			return fmt.Errorf("repository: %s, which reads packs that the migration deletes: %w", info, ErrLocked)
		}
	}
	return nil
}

// convertPacks rewrites every version 1 pack as a version 2 pack, one pack
// in memory at a time, and deletes the version 2 packs an interrupted run
// wrote for version 1 packs that are gone since (a GC in between).
func (e *encryptedMigration) convertPacks(ctx context.Context) error {
	stored, err := listPacks(ctx, e.raw)
	if err != nil {
		return err
	}
	ids := make([]ID, 0, len(stored))
	for id := range stored {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b ID) int { return bytes.Compare(a[:], b[:]) })
	sealedPacks := map[ID]bool{}
	var v1 []ID
	for _, id := range ids {
		magic, err := e.packMagic(ctx, id, stored[id])
		if err != nil {
			return err
		}
		switch magic {
		case sealedPackMagic:
			sealedPacks[id] = true
		case packMagic:
			v1 = append(v1, id)
		default:
			return fmt.Errorf("%w (nothing was changed that version 1 reads; run repair or gc, then migrate again)", corrupt(packName(id), "not a pack: trailer %q", magic))
		}
	}
	wanted := map[ID]bool{}
	for i, id := range v1 {
		e.opts.report("packs", i, len(v1))
		to, err := e.convertPack(ctx, id, sealedPacks)
		if err != nil {
			return err
		}
		wanted[to] = true
	}
	e.opts.report("packs", len(v1), len(v1))
	for id := range sealedPacks {
		if wanted[id] {
			continue
		}
		if err := e.raw.Delete(ctx, packName(id)); err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("delete stale version 2 pack: %w", err)
		}
		e.report.StaleV2Packs++
	}
	return nil
}

// packMagic returns the last four bytes of a stored pack.
func (e *encryptedMigration) packMagic(ctx context.Context, id ID, size int64) (string, error) {
	if size < packTrailerSize {
		return "", corrupt(packName(id), "%d bytes is too short for a pack", size)
	}
	var magic [4]byte
	if err := e.raw.ReadAt(ctx, packName(id), magic[:], size-4); err != nil {
		return "", fmt.Errorf("read pack: %w", err)
	}
	return string(magic[:]), nil
}

// convertPack writes version 1 pack id as a version 2 pack, unless
// existing (the version 2 packs in the store) has it already, and records
// where its blobs went. The new pack's bytes follow from the old pack's
// and the master key alone: each blob's nonce is a keyed hash of the old
// pack's name (the hash of its bytes, checked here) and the blob's
// position, so an interrupted run's pack is recognised by its name.
func (e *encryptedMigration) convertPack(ctx context.Context, id ID, existing map[ID]bool) (ID, error) {
	name := packName(id)
	data, err := e.raw.Get(ctx, name)
	if err != nil {
		return ID{}, fmt.Errorf("read pack: %w", err)
	}
	const fix = "(the repository is still version 1; run repair, or gc, then migrate again)"
	if Hash(data) != id {
		return ID{}, fmt.Errorf("%w %s", corrupt(name, "content does not match its name"), fix)
	}
	entries, err := decodePack(data, nil)
	if err != nil {
		return ID{}, fmt.Errorf("%w %s", corrupt(name, "%v", err), fix)
	}
	out := make([]byte, 0, len(data)+len(entries)*migratePackGrowth+sealOverhead2+packTrailerSize)
	conv := packConversion{offsets: make([]uint32, len(entries))}
	converted := make([]packEntry, len(entries))
	var plain []byte
	for i, b := range entries {
		opened, err := e.repo.keys.open(plain[:0], data[b.Offset:b.Offset+b.Length], b.ID[:])
		plain = opened
		if err != nil {
			return ID{}, fmt.Errorf("%w %s", corrupt(fmt.Sprintf("%s blob %s in pack %s", b.Type, b.ID, id), "%v", err), fix)
		}
		conv.offsets[i] = b.Offset
		c := b
		c.Offset = uint32(len(out))
		out = sealWithNonce(e.ring.keys.data, out, e.packNonce(id, uint32(i)), opened, sealAD(sealKindBlob, b.ID[:]))
		c.Length = uint32(len(out)) - c.Offset
		converted[i] = c
	}
	dataSize := len(out)
	header := appendPackEntries(nil, converted)
	out = sealWithNonce(e.ring.keys.metadata, out, e.packNonce(id, headerPosition), header, sealAD(sealKindPackHeader, binary.LittleEndian.AppendUint64(nil, uint64(dataSize))))
	out = binary.LittleEndian.AppendUint32(out, uint32(len(out)-dataSize))
	out = append(out, sealedPackMagic...)
	conv.to = Hash(out)
	e.packs[id] = conv
	e.report.V1Packs++
	if existing[conv.to] {
		e.report.V2PacksReused++
		return conv.to, nil
	}
	if err := e.raw.Put(ctx, packName(conv.to), out); err != nil {
		return ID{}, fmt.Errorf("write version 2 pack: %w", err)
	}
	e.report.V2PacksWritten++
	return conv.to, nil
}

// headerPosition stands for a pack's header among its blobs' positions in
// packNonce.
const headerPosition = ^uint32(0)

// packNonce is the nonce of the seal at position (a blob's, or the
// header's) of the version 2 pack made from version 1 pack id: the keyed
// BLAKE3 of id and position. Two seals share one only if they seal the
// same bytes of the same pack, which is one seal made twice.
func (e *encryptedMigration) packNonce(id ID, position uint32) []byte {
	h, _ := blake3.NewKeyed(e.nonces[:])
	h.Write(id[:])
	h.Write(binary.LittleEndian.AppendUint32(nil, position))
	return h.Sum(nil)[:chacha20poly1305.NonceSizeX]
}

// sealWithNonce appends nonce | ciphertext | tag of plaintext to dst, as
// seal2 does with a random nonce.
func sealWithNonce(aead interface {
	Seal(dst, nonce, plaintext, ad []byte) []byte
}, dst, nonce, plaintext, ad []byte) []byte {
	dst = append(dst, nonce...)
	return aead.Seal(dst, nonce, plaintext, ad)
}

// convertEntry moves a version 1 index entry to the version 2 pack its
// pack became.
func (e *encryptedMigration) convertEntry(x indexEntry) (indexEntry, error) {
	conv, ok := e.packs[x.Pack]
	if !ok {
		return x, corrupt(packName(x.Pack), "listed in the index, but not in the store (the repository is still version 1; run verify and repair, then migrate again)")
	}
	i, found := slices.BinarySearch(conv.offsets, x.Offset)
	if !found {
		return x, corrupt(packName(x.Pack), "the index places blob %s at offset %d, where no blob of the pack begins", x.ID, x.Offset)
	}
	x.Pack = conv.to
	x.Offset += uint32(i) * migratePackGrowth
	x.Length += migratePackGrowth
	return x, nil
}

// stageObjects seals every object both versions name alike for version 2,
// under migrateStagePrefix: manifests, state/ and logs/ (opened with the
// version 1 key), garbage records (plain in version 1; the packs they list
// are renamed to their version 2 packs), and this run's lock. Staged
// copies whose object is gone (an interrupted run's, before a GC or a
// delete in between) are deleted.
func (e *encryptedMigration) stageObjects(ctx context.Context) error {
	staged, err := listNames(ctx, e.raw, migrateStagePrefix)
	if err != nil {
		return fmt.Errorf("list %s: %w", migrateStagePrefix, err)
	}
	// Heads records are caches (heads.go), deleted rather than resealed:
	// the first create of each collection after the switch rebuilds its
	// record, and a damaged one cannot stop the migration.
	heads, err := listNames(ctx, e.raw, headsPrefix)
	if err != nil {
		return fmt.Errorf("list %s: %w", headsPrefix, err)
	}
	for _, name := range heads {
		if err := e.raw.Delete(ctx, name); err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("delete heads record: %w", err)
		}
	}
	keep := map[string]bool{}
	var names []string
	for _, prefix := range []string{manifestPrefix, statePrefix, logPrefix, garbagePrefix} {
		more, err := listNames(ctx, e.raw, prefix)
		if err != nil {
			return fmt.Errorf("list %s: %w", prefix, err)
		}
		names = append(names, more...)
	}
	names = append(names, e.lock.name)
	for i, name := range names {
		e.opts.report("stage", i, len(names))
		data, err := e.raw.Get(ctx, name)
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		plain, err := e.versionOnePlaintext(name, data)
		if err != nil {
			return fmt.Errorf("%w (the repository is still version 1)", err)
		}
		sealed, err := e.sealed.seal(name, plain)
		if err != nil {
			return err
		}
		if err := e.raw.Put(ctx, migrateStagePrefix+name, sealed); err != nil {
			return fmt.Errorf("stage %s: %w", name, err)
		}
		keep[migrateStagePrefix+name] = true
		e.report.ObjectsResealed++
	}
	e.opts.report("stage", len(names), len(names))
	for _, name := range staged {
		if !keep[name] {
			if err := e.raw.Delete(ctx, name); err != nil && !errors.Is(err, ErrNotFound) {
				return fmt.Errorf("delete stale staged object: %w", err)
			}
		}
	}
	return nil
}

// versionOnePlaintext opens an object as version 1 stores it.
func (e *encryptedMigration) versionOnePlaintext(name string, data []byte) ([]byte, error) {
	switch {
	case strings.HasPrefix(name, lockPrefix):
		return data, nil
	case strings.HasPrefix(name, garbagePrefix):
		var g garbageRecord
		if err := json.Unmarshal(data, &g); err != nil {
			return nil, corrupt(name, "%v", err)
		}
		packs := g.Packs[:0:0]
		for _, id := range g.Packs {
			if conv, ok := e.packs[id]; ok {
				packs = append(packs, conv.to)
			} // else: deleted already; nothing left to delete
		}
		g.Packs = packs
		return json.Marshal(g)
	}
	return e.repo.openObject(name, data)
}

// afterSwitch finishes a repository whose config says encrypted version
// 2: it moves the staged objects to their names, then deletes the version
// 1 index files and packs.
func (e *encryptedMigration) afterSwitch(ctx context.Context) error {
	staged, err := listNames(ctx, e.raw, migrateStagePrefix)
	if err != nil {
		return fmt.Errorf("list %s: %w", migrateStagePrefix, err)
	}
	for i, name := range staged {
		e.opts.report("move", i, len(staged))
		target := strings.TrimPrefix(name, migrateStagePrefix)
		if strings.HasPrefix(target, lockPrefix) {
			if target != e.lock.name {
				// An interrupted run's lock: its lock object is gone or
				// stale, and this copy only ever stood in for it.
				if err := e.raw.Delete(ctx, name); err != nil && !errors.Is(err, ErrNotFound) {
					return fmt.Errorf("delete staged lock: %w", err)
				}
			}
			continue
		}
		if err := e.moveStaged(ctx, name, target); err != nil {
			return err
		}
	}
	e.opts.report("move", len(staged), len(staged))
	// A run killed inside a Put left its temporary file, under migrate/
	// as anywhere: the run that finishes leaves nothing staged behind.
	if remover, ok := findStore[tempRemover](e.raw); ok {
		if _, err := remover.RemoveTemp(ctx); err != nil {
			return err
		}
	}
	if err := e.refuseReaders(ctx); err != nil {
		return err
	}
	if lost := e.lock.lost(); lost != nil {
		return fmt.Errorf("stopped before deleting the version 1 objects: %w", lost)
	}
	index, err := listObjects(ctx, e.raw, indexPrefix)
	if err != nil {
		return fmt.Errorf("list index: %w", err)
	}
	var v1 []string
	for _, info := range index {
		magic, err := e.indexFileMagic(ctx, info)
		if err != nil {
			return err
		}
		if magic == indexMagic {
			v1 = append(v1, info.Name)
		}
	}
	stored, err := listPacks(ctx, e.raw)
	if err != nil {
		return err
	}
	for id, size := range stored {
		magic, err := e.packMagic(ctx, id, size)
		if err != nil && !errors.Is(err, ErrCorrupt) {
			return err
		}
		if magic == packMagic {
			v1 = append(v1, packName(id))
		}
	}
	slices.Sort(v1) // index/ before packs/: no index file outlives its packs
	for i, name := range v1 {
		e.opts.report("delete", i, len(v1))
		if err := e.raw.Delete(ctx, name); err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("delete version 1 object: %w", err)
		}
		if strings.HasPrefix(name, indexPrefix) {
			e.report.V1IndexFilesDeleted++
		} else {
			e.report.V1PacksDeleted++
		}
	}
	e.opts.report("delete", len(v1), len(v1))
	return nil
}

// moveStaged puts the staged copy name in place of target, if target still
// holds what version 1 stored there (its seal does not open as version 2),
// and deletes the copy. A target that is gone, or that version 2 wrote
// since the switch (a delete, a create, a GC), is left as it is.
func (e *encryptedMigration) moveStaged(ctx context.Context, name, target string) error {
	current, err := e.raw.Get(ctx, target)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return fmt.Errorf("read: %w", err)
	default:
		if _, err := e.sealed.open(target, current); err != nil {
			data, err := e.raw.Get(ctx, name)
			if err != nil {
				return fmt.Errorf("read staged: %w", err)
			}
			if _, err := e.sealed.open(target, data); err != nil {
				return fmt.Errorf("staged copy %s: %w", name, err)
			}
			if err := e.raw.Put(ctx, target, data); err != nil {
				return fmt.Errorf("move %s into place: %w", name, err)
			}
			e.report.ObjectsMoved++
		}
	}
	if err := e.raw.Delete(ctx, name); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("delete staged: %w", err)
	}
	return nil
}

// useEncryptedVersion2 makes r read and write the repository as encrypted
// version 2 from now on, through ring. Nothing else may use r meanwhile
// (Migrate's contract), and its lock is released.
func (r *Repository) useEncryptedVersion2(cfg Config, ring *Keyring) {
	if r.ring != nil {
		return
	}
	cfg.Version, cfg.Encryption, cfg.KeyCheck = FormatVersion2, encryptionV2, ""
	r.idxMu.Lock()
	defer r.idxMu.Unlock()
	r.config, r.keys, r.ring = cfg, nil, ring
	r.store = newSealedStore(r.raw, ring.keys)
	r.idx = newUnloadedIndexV2Set()
}
