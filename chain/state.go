package chain

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// A collection keeps two kinds of small objects besides its manifests:
// its state ("state/COLLECTION": what the consistency layer remembers
// between creates, such as the fallback counter and the rate limiter's
// history) and its hook logs ("logs/COLLECTION/NAME.jsonl", one per create).

const (
	statePrefix = "state/"
	logPrefix   = "logs/"
)

// LoadCollectionState returns the collection's state object, or nil if it
// has none yet.
func (r *Repository) LoadCollectionState(ctx context.Context, collection string) ([]byte, error) {
	if err := CheckName("collection", collection); err != nil {
		return nil, err
	}
	data, err := r.store.Get(ctx, statePrefix+collection)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("collection %q state: %w", collection, err)
	}
	return r.openObject(statePrefix+collection, data)
}

// SaveCollectionState replaces the collection's state object. Callers hold
// the collection's lock.
func (r *Repository) SaveCollectionState(ctx context.Context, collection string, data []byte) error {
	if err := CheckName("collection", collection); err != nil {
		return err
	}
	if err := r.store.Put(ctx, statePrefix+collection, r.sealObject(statePrefix+collection, data)); err != nil {
		return fmt.Errorf("collection %q state: %w", collection, err)
	}
	return nil
}

// SaveHookLog stores one create's hook log (JSON lines) under name.
func (r *Repository) SaveHookLog(ctx context.Context, collection, name string, data []byte) error {
	if err := CheckName("collection", collection); err != nil {
		return err
	}
	if err := CheckName("hook log", name); err != nil {
		return err
	}
	object := logPrefix + collection + "/" + name + ".jsonl"
	if err := r.store.Put(ctx, object, r.sealObject(object, data)); err != nil {
		return fmt.Errorf("collection %q hook log: %w", collection, err)
	}
	return nil
}

// HookLogs returns the collection's hook logs, oldest first (names start
// with the time), concatenated.
func (r *Repository) HookLogs(ctx context.Context, collection string) ([]byte, error) {
	if err := CheckName("collection", collection); err != nil {
		return nil, err
	}
	names, err := listNames(ctx, r.store, logPrefix+collection+"/")
	if err != nil {
		return nil, fmt.Errorf("collection %q hook logs: %w", collection, err)
	}
	sort.Strings(names)
	var out []byte
	for _, name := range names {
		if !strings.HasSuffix(name, ".jsonl") {
			continue
		}
		data, err := r.store.Get(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("collection %q hook log: %w", collection, err)
		}
		if data, err = r.openObject(name, data); err != nil {
			return nil, err
		}
		out = append(out, data...)
	}
	return out, nil
}
