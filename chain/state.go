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

// hookLogName is the object holding the hook log of the create that made,
// or tried to make, restore point id: the log is kept with its point.
func hookLogName(collection, id string) string {
	return logPrefix + collection + "/" + id + ".jsonl"
}

// SaveHookLog stores the hook log (JSON lines) of the create that made, or
// tried to make, restore point id.
func (r *Repository) SaveHookLog(ctx context.Context, collection, id string, data []byte) error {
	if err := CheckName("collection", collection); err != nil {
		return err
	}
	if err := CheckName("hook log", id); err != nil {
		return err
	}
	object := hookLogName(collection, id)
	if err := r.store.Put(ctx, object, r.sealObject(object, data)); err != nil {
		return fmt.Errorf("collection %q: hook log %s: %w", collection, id, err)
	}
	return nil
}

// DeleteHookLog deletes the hook log of restore point id, if it has one.
// Deleting a restore point deletes its log with it (snapshot's
// Collection.Delete does both); a log left behind counts as one of a failed
// create's, which TrimHookLogs bounds.
func (r *Repository) DeleteHookLog(ctx context.Context, collection, id string) error {
	if err := CheckName("collection", collection); err != nil {
		return err
	}
	if err := CheckName("hook log", id); err != nil {
		return err
	}
	if err := r.store.Delete(ctx, hookLogName(collection, id)); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("collection %q: delete hook log %s: %w", collection, id, err)
	}
	return nil
}

// hookLogIDs returns the restore point IDs of the collection's hook logs,
// oldest first (IDs start with the time).
func (r *Repository) hookLogIDs(ctx context.Context, collection string) ([]string, error) {
	prefix := logPrefix + collection + "/"
	names, err := listNames(ctx, r.store, prefix)
	if err != nil {
		return nil, fmt.Errorf("collection %q hook logs: %w", collection, err)
	}
	var ids []string
	for _, name := range names {
		id, ok := strings.CutSuffix(strings.TrimPrefix(name, prefix), ".jsonl")
		if ok && !strings.Contains(id, "/") {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// TrimHookLogs bounds the hook logs of creates that stored no restore point
// (the logs whose ID has no manifest): it deletes all but the newest keep
// of them and returns how many it deleted. Logs of restore points are kept
// as long as their points.
func (r *Repository) TrimHookLogs(ctx context.Context, collection string, keep int) (int, error) {
	if err := CheckName("collection", collection); err != nil {
		return 0, err
	}
	// Logs before manifests: a create saves its manifest before its log, so
	// a log listed here whose create succeeded has its manifest listed below.
	ids, err := r.hookLogIDs(ctx, collection)
	if err != nil {
		return 0, err
	}
	if len(ids) <= keep {
		return 0, nil
	}
	manifests, err := listNames(ctx, r.store, manifestPrefix+collection+"/")
	if err != nil {
		return 0, fmt.Errorf("collection %q hook logs: list restore points: %w", collection, err)
	}
	points := make(map[string]bool, len(manifests))
	for _, name := range manifests {
		points[strings.TrimPrefix(name, manifestPrefix+collection+"/")] = true
	}
	var failed []string
	for _, id := range ids {
		if !points[id] {
			failed = append(failed, id)
		}
	}
	deleted := 0
	for len(failed)-deleted > keep {
		if err := r.DeleteHookLog(ctx, collection, failed[deleted]); err != nil {
			return deleted, err
		}
		deleted++
	}
	return deleted, nil
}

// HookLogs calls fn with each of the collection's hook logs, oldest first:
// the restore point ID its create had and its JSON lines. It holds one log
// in memory at a time; an error from fn stops it and is returned.
func (r *Repository) HookLogs(ctx context.Context, collection string, fn func(id string, data []byte) error) error {
	if err := CheckName("collection", collection); err != nil {
		return err
	}
	ids, err := r.hookLogIDs(ctx, collection)
	if err != nil {
		return err
	}
	for _, id := range ids {
		object := hookLogName(collection, id)
		data, err := r.store.Get(ctx, object)
		if errors.Is(err, ErrNotFound) {
			continue // deleted with its restore point since we listed
		}
		if err != nil {
			return fmt.Errorf("collection %q: hook log %s: %w", collection, id, err)
		}
		if data, err = r.openObject(object, data); err != nil {
			return err
		}
		if err := fn(id, data); err != nil {
			return err
		}
	}
	return nil
}
