package chain

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// A garbage record lists packs a GC dropped (wholly dead, or repacked)
// while readers held locks: a reader may still read them through the index
// it loaded before the GC, so they stay in place. A later GC deletes them,
// and then the record, once every live reader has loaded its index after
// the record's time (plus garbageClockSkew, since the times come from
// different hosts' clocks). Until then no GC takes them for unindexed
// leftovers of a failed create.
type garbageRecord struct {
	Dropped time.Time `json:"dropped"`
	Packs   []ID      `json:"packs"`
}

const garbagePrefix = "garbage/"

// garbageClockSkew is how far apart the clocks of hosts sharing a
// repository may be.
var garbageClockSkew = time.Minute

// reapable reports whether no live reader can read the record's packs any
// more: each loaded its index after they left it.
func (g garbageRecord) reapable(readers []LockInfo) bool {
	for _, r := range readers {
		if !r.IndexLoaded.After(g.Dropped.Add(garbageClockSkew)) {
			return false
		}
	}
	return true
}

// loadGarbage reads every garbage record. One that cannot be read or
// decoded is an error naming it: the packs it lists are unknown, and would
// otherwise be deleted as unindexed leftovers under a reader.
func loadGarbage(ctx context.Context, store Store) (map[string]garbageRecord, error) {
	names, err := listNames(ctx, store, garbagePrefix)
	if err != nil {
		return nil, fmt.Errorf("list garbage records: %w", err)
	}
	records := map[string]garbageRecord{}
	for _, name := range names {
		data, err := store.Get(ctx, name)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read garbage record %s: %w", name, err)
		}
		var g garbageRecord
		if err := json.Unmarshal(data, &g); err != nil {
			return nil, corrupt(name, "%v", err)
		}
		records[name] = g
	}
	return records, nil
}

// writeGarbage records packs as dropped now, and returns the record's name.
func writeGarbage(ctx context.Context, store Store, packs []ID) (string, error) {
	now := time.Now().UTC()
	var suffix [8]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return "", err
	}
	name := fmt.Sprintf("%s%d-%s", garbagePrefix, now.UnixNano(), hex.EncodeToString(suffix[:]))
	data, err := json.Marshal(garbageRecord{Dropped: now, Packs: packs})
	if err != nil {
		return "", err
	}
	if err := store.Put(ctx, name, data); err != nil {
		return "", fmt.Errorf("write garbage record %s: %w", name, err)
	}
	return name, nil
}
