package chain

import (
	"context"
	"errors"
	"fmt"
)

// The key ring of an encrypted version 2 repository, as the repository
// exposes it: list, add, remove and change credentials. A change writes or
// deletes one key object (keys/ID) and never touches blobs, so blob IDs,
// packs and restore points stay as they are.
//
// Adding, removing and changing hold the repository's exclusive lock (the
// one GC holds), so two key changes, or a key change and a GC, never run at
// once: two processes each removing the key the other still holds could
// otherwise leave the repository without one. Listing needs no lock and no
// credential beyond the one the repository was opened with.

// errNoKeyRing: the repository has no key ring to change.
var errNoKeyRing = fmt.Errorf("only an encrypted format version 2 repository has a key ring (version 1 uses its one key; a plain repository has none): %w", ErrUnsupportedVersion)

// Keys describes the repository's key objects, oldest first (see
// ListKeys); UsedKey says which one opened this Repository.
func (r *Repository) Keys(ctx context.Context) ([]KeyInfo, error) {
	if r.ring == nil {
		return nil, fmt.Errorf("list keys: %w", errNoKeyRing)
	}
	keys, err := ListKeys(ctx, r.raw)
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	return keys, nil
}

// UsedKey returns the ID of the key object this Repository was opened with
// (or changed to by ChangeKey), or "" if it has no key ring.
func (r *Repository) UsedKey() string {
	if r.ring == nil {
		return ""
	}
	r.ringMu.Lock()
	defer r.ringMu.Unlock()
	return r.ring.UsedKey()
}

// AddKey adds a key object for cred, described by opts, and returns its
// ID. The new credential opens the repository from then on, as the others
// still do. It holds the repository's exclusive lock.
func (r *Repository) AddKey(ctx context.Context, cred Credential, opts KeyOptions) (string, error) {
	var id string
	err := r.withKeyRing(ctx, "key add", func(ctx context.Context) error {
		var err error
		id, err = r.ring.AddKey(ctx, r.raw, cred, opts)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("add key: %w", err)
	}
	return id, nil
}

// RemoveKey deletes the key object id. It refuses the key this Repository
// was opened with (ErrKeyInUse) and the last key (ErrLastKey); a missing
// one is ErrNotFound. It holds the repository's exclusive lock.
func (r *Repository) RemoveKey(ctx context.Context, id string) error {
	err := r.withKeyRing(ctx, "key remove", func(ctx context.Context) error {
		return r.ring.RemoveKey(ctx, r.raw, id)
	})
	if err != nil {
		return fmt.Errorf("remove key: %w", err)
	}
	return nil
}

// ChangeKey replaces the key this Repository was opened with by one for
// cred (a passwd), and returns the new key's ID: it adds the new key
// object, checks that it opens, and only then deletes the old one, so that
// there is never a moment without a working key (see Keyring.ChangeKey).
// From then on UsedKey is the new key. It holds the repository's exclusive
// lock.
func (r *Repository) ChangeKey(ctx context.Context, cred Credential, opts KeyOptions) (string, error) {
	var id string
	err := r.withKeyRing(ctx, "key passwd", func(ctx context.Context) error {
		var err error
		id, err = r.ring.ChangeKey(ctx, r.raw, cred, opts)
		return err
	})
	if err != nil {
		if id != "" {
			return id, fmt.Errorf("change key: %w", err)
		}
		return "", fmt.Errorf("change key: %w", err)
	}
	return id, nil
}

// withKeyRing runs fn, which changes the key ring, under the repository's
// exclusive lock, and under the lock's context: fn stops if the lock is
// lost. Only one key ring change runs at a time in this process (ringMu),
// since ChangeKey changes the key in use.
func (r *Repository) withKeyRing(ctx context.Context, operation string, fn func(context.Context) error) error {
	if r.ring == nil {
		return errNoKeyRing
	}
	lock, err := r.lock(ctx, true, operation)
	if err != nil {
		return err
	}
	defer lock.unlock()
	r.ringMu.Lock()
	defer r.ringMu.Unlock()
	err = fn(lock.ctx)
	if lost := lock.lost(); err != nil && lost != nil && !errors.Is(err, ErrLockLost) {
		err = fmt.Errorf("%w, so it stopped: %w", lost, err)
	}
	return err
}
