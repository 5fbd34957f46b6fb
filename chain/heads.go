package chain

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// A collection's heads record ("heads/COLLECTION", FORMAT.md "Heads
// records") names the newest restore point of each disk name, and the
// newest of all, so that a create finds the parents of its disks by
// reading that record and the manifests it names, not every manifest of
// the collection.
//
// It is a cache, never the truth: it also carries the count and a digest
// of the set of manifest names it was made from, and is used only when
// both equal those of the names listed now. Any change to the set that
// did not go through the record (a point deleted, one saved by another
// process that lost a race to update it, by an older build, a crash
// between a manifest and its record) makes them differ, and the record is
// rebuilt from the manifests. Manifests are never replaced (PutIfAbsent),
// so the set of names decides the newest point of each disk.

const (
	headsPrefix = "heads/"
	// headsVersion is the layout of the record; a record of another
	// version is rebuilt.
	headsVersion = 1
)

func headsName(collection string) string { return headsPrefix + collection }

// headsRecord is the stored record.
type headsRecord struct {
	Version    int    `json:"version"`
	Collection string `json:"collection"`
	// Points and Set describe the manifest names the record was made
	// from: how many, and manifestSet's digest of them in hex.
	Points int    `json:"points"`
	Set    string `json:"set"`
	// Newest is the newest restore point of the collection (nil when it
	// has none that can be read); Disks the newest of each disk name.
	Newest *pointHead           `json:"newest,omitempty"`
	Disks  map[string]pointHead `json:"disks"`
}

// pointHead names a restore point and its creation time, which decides
// which of two points is newer (then the ID, as ListManifests orders).
type pointHead struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
}

// newerThan reports whether h sorts after o as ListManifests orders.
func (h pointHead) newerThan(o pointHead) bool {
	if !h.Created.Equal(o.Created) {
		return h.Created.After(o.Created)
	}
	return h.ID > o.ID
}

// manifestSet is the set of a collection's manifest names, as a count and
// an order-free digest: the XOR of each name's element hash. Adding or
// removing a name is one XOR, so a writer keeps the record up to date
// without listing the collection.
type manifestSet struct {
	points int
	digest ID
}

// manifestElement is a manifest name's share of the set digest: the
// repository's blob hash (keyed BLAKE3-256 in an encrypted repository,
// so that no one without the key can choose names whose hashes cancel)
// of "diskpoint manifest set\x00" and the object's name.
func (r *Repository) manifestElement(collection, id string) ID {
	return r.HashBlob(appendManifestElementInput(nil, collection, id))
}

// manifestElementDomain starts the bytes hashed for a manifest name's
// element.
const manifestElementDomain = "diskpoint manifest set\x00"

// appendManifestElementInput appends to b what manifestElement hashes.
func appendManifestElementInput(b []byte, collection, id string) []byte {
	b = append(b, manifestElementDomain...)
	b = append(b, manifestPrefix...)
	b = append(b, collection...)
	b = append(b, '/')
	return append(b, id...)
}

// toggle adds id to the set, or removes it.
func (s *manifestSet) toggle(e ID, delta int) {
	for i := range s.digest {
		s.digest[i] ^= e[i]
	}
	s.points += delta
}

// manifestSetOf is the set of ids' manifest names in collection. A create
// computes it over every name listed (10,000 for a collection of 10,000
// points), so the bytes hashed are built in one buffer, the name appended
// to its collection's prefix, not allocated per name.
func (r *Repository) manifestSetOf(collection string, ids []string) manifestSet {
	var s manifestSet
	buf := appendManifestElementInput(make([]byte, 0, 128), collection, "")
	prefix := len(buf)
	for _, id := range ids {
		buf = append(buf[:prefix], id...)
		s.toggle(r.HashBlob(buf), 1)
	}
	return s
}

func (rec *headsRecord) set() manifestSet {
	s := manifestSet{points: rec.Points}
	if b, err := hex.DecodeString(rec.Set); err == nil && len(b) == len(s.digest) {
		copy(s.digest[:], b)
	}
	return s
}

func (rec *headsRecord) setSet(s manifestSet) {
	rec.Points, rec.Set = s.points, hex.EncodeToString(s.digest[:])
}

// toggle adds restore point id to the record's set (delta 1), or removes
// it (delta -1), leaving the heads as they are.
func (rec *headsRecord) toggle(r *Repository, id string, delta int) {
	s := rec.set()
	s.toggle(r.manifestElement(rec.Collection, id), delta)
	rec.setSet(s)
}

// add records m, a manifest just saved, as a point of the set: it becomes
// the head of each of its disks it is newer than.
func (rec *headsRecord) add(r *Repository, m *Manifest) {
	rec.toggle(r, m.ID, 1)
	h := pointHead{ID: m.ID, Created: m.Created}
	if rec.Newest == nil || h.newerThan(*rec.Newest) {
		rec.Newest = &h
	}
	if rec.Disks == nil {
		rec.Disks = map[string]pointHead{}
	}
	for _, d := range m.Disks {
		if old, ok := rec.Disks[d.Name]; !ok || h.newerThan(old) {
			rec.Disks[d.Name] = h
		}
	}
}

// isHead reports whether the record names point id as a head.
func (rec *headsRecord) isHead(id string) bool {
	if rec.Newest != nil && rec.Newest.ID == id {
		return true
	}
	for _, h := range rec.Disks {
		if h.ID == id {
			return true
		}
	}
	return false
}

// head returns the head the record has for disk ("" for the newest point).
func (rec *headsRecord) head(disk string) (pointHead, bool) {
	if disk == "" {
		if rec.Newest == nil {
			return pointHead{}, false
		}
		return *rec.Newest, true
	}
	h, ok := rec.Disks[disk]
	return h, ok
}

// encodeHeads is the record as stored (before sealing).
func encodeHeads(rec *headsRecord) ([]byte, error) {
	data, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("heads record of %q: %w", rec.Collection, err)
	}
	return append(data, '\n'), nil
}

// decodeHeads parses the record object holds and checks it: its version,
// that it is collection's, and that what it names could be named. A record
// that fails is ErrCorrupt naming object, and is rebuilt, never trusted.
func decodeHeads(object, collection string, data []byte) (*headsRecord, error) {
	var rec headsRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, corrupt(object, "%v", err)
	}
	if rec.Version != headsVersion {
		return nil, corrupt(object, "version %d, want %d", rec.Version, headsVersion)
	}
	if rec.Collection != collection {
		return nil, corrupt(object, "it says it is collection %q's", rec.Collection)
	}
	if rec.Points < 0 {
		return nil, corrupt(object, "%d points", rec.Points)
	}
	if b, err := hex.DecodeString(rec.Set); err != nil || len(b) != len(ID{}) {
		return nil, corrupt(object, "set digest %q is not %d bytes of hex", rec.Set, len(ID{}))
	}
	if rec.Newest == nil && len(rec.Disks) > 0 {
		return nil, corrupt(object, "heads of disks, but no newest point")
	}
	if rec.Newest != nil {
		if err := rec.Newest.check(); err != nil {
			return nil, corrupt(object, "newest point: %v", err)
		}
		if rec.Points == 0 {
			return nil, corrupt(object, "a newest point of no points")
		}
	}
	for disk, h := range rec.Disks {
		if err := CheckName("disk", disk); err != nil {
			return nil, corrupt(object, "%v", err)
		}
		if err := h.check(); err != nil {
			return nil, corrupt(object, "disk %q: %v", disk, err)
		}
		if h.newerThan(*rec.Newest) {
			return nil, corrupt(object, "disk %q's point %s is newer than the newest, %s", disk, h.ID, rec.Newest.ID)
		}
	}
	return &rec, nil
}

func (h pointHead) check() error {
	if err := CheckName("restore point", h.ID); err != nil {
		return err
	}
	if h.Created.IsZero() {
		return fmt.Errorf("restore point %s has no creation time", h.ID)
	}
	return nil
}

// loadHeads returns collection's heads record, or nil, with no error, if
// there is none or it cannot be used (damaged, another version): either
// way it is to be rebuilt. A read that fails is an error.
func (r *Repository) loadHeads(ctx context.Context, collection string) (*headsRecord, error) {
	name := headsName(collection)
	data, err := r.store.Get(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err == nil {
		// (An encrypted version 2 repository's store opens the seal in
		// Get, and reports damage there.)
		data, err = r.openObject(name, data)
	}
	if err == nil {
		var rec *headsRecord
		if rec, err = decodeHeads(name, collection, data); err == nil {
			return rec, nil
		}
	}
	if errors.As(err, new(*CorruptError)) {
		r.Logger().Debug("heads record unusable: rebuilding it from the manifests", "collection", collection, "error", err)
		return nil, nil
	}
	return nil, fmt.Errorf("collection %q heads record: %w", collection, err)
}

// saveHeads replaces collection's heads record.
func (r *Repository) saveHeads(ctx context.Context, rec *headsRecord) error {
	data, err := encodeHeads(rec)
	if err != nil {
		return err
	}
	name := headsName(rec.Collection)
	if err := r.store.Put(ctx, name, r.sealObject(name, data)); err != nil {
		return fmt.Errorf("collection %q heads record: %w", rec.Collection, err)
	}
	return nil
}

// headsAfterSave brings the heads record up to date with m, just saved. A
// record missing or unusable stays so (the next create rebuilds it); one
// that fails to be written stays as it was, and its set no longer matches.
// So a failure here costs a rebuild, never a wrong parent: it is logged,
// not returned, for the restore point is committed.
func (r *Repository) headsAfterSave(ctx context.Context, m *Manifest) {
	r.headsMu.Lock()
	defer r.headsMu.Unlock()
	rec, err := r.loadHeads(ctx, m.Collection)
	if err == nil && rec != nil {
		rec.add(r, m)
		err = r.saveHeads(ctx, rec)
	}
	if err != nil {
		r.Logger().Warn("heads record not updated: the next create rebuilds it", "collection", m.Collection, "restore_point", m.ID, "error", err)
	}
}

// headsAfterDelete brings the heads record up to date with restore point
// id, just deleted: a point that is no head leaves the set; the record of
// a head is deleted, for it does not know the point before.
func (r *Repository) headsAfterDelete(ctx context.Context, collection, id string) {
	r.headsMu.Lock()
	defer r.headsMu.Unlock()
	rec, err := r.loadHeads(ctx, collection)
	switch {
	case err != nil || rec == nil:
	case rec.isHead(id):
		if err = r.store.Delete(ctx, headsName(collection)); errors.Is(err, ErrNotFound) {
			err = nil
		}
	default:
		rec.toggle(r, id, -1)
		err = r.saveHeads(ctx, rec)
	}
	if err != nil {
		r.Logger().Warn("heads record not updated: the next create rebuilds it", "collection", collection, "deleted", id, "error", err)
	}
}

// NewestManifests returns, for each name in disks, the newest restore
// point of collection that has a disk of that name ("" stands for any
// disk: the newest point), newest as ListManifests orders (by Created,
// then ID); a name no restore point has is absent. Damaged manifests are
// passed over, as ListManifests passes them over.
//
// It lists the collection's manifest names (names only) and reads its
// heads record and the manifests the record names: a few reads, however
// many points the collection has. When the record is missing, damaged,
// or made from another set of manifests than the one listed, or a point
// it names cannot be read: with rebuild, it reads every manifest, answers
// from them and stores a new record (callers that rebuild hold the
// collection's lock, as a create does); without, it returns ok false and
// reads nothing more, for the caller to find the points its own way.
func (r *Repository) NewestManifests(ctx context.Context, collection string, disks []string, rebuild bool) (found map[string]*Manifest, ok bool, err error) {
	ids, err := r.manifestIDs(ctx, collection) // in no order: the set's digest has none
	if err != nil {
		return nil, false, err
	}
	rec, err := r.loadHeads(ctx, collection)
	if err != nil {
		return nil, false, err
	}
	if rec != nil {
		if rec.set() == r.manifestSetOf(collection, ids) {
			found, ok, err := r.newestFromHeads(ctx, rec, disks)
			if err != nil || ok {
				return found, ok, err
			}
		} else {
			r.Logger().Debug("heads record stale: made from another set of restore points", "collection", collection, "record_points", rec.Points, "listed_points", len(ids))
		}
	}
	if !rebuild {
		return nil, false, nil
	}
	found, err = r.rebuildHeads(ctx, collection, ids, disks)
	return found, err == nil, err
}

// newestFromHeads reads the manifests rec names for disks. It reports ok
// false if one cannot be read or is not what the record says (deleted,
// damaged, or another point of the same ID).
func (r *Repository) newestFromHeads(ctx context.Context, rec *headsRecord, disks []string) (map[string]*Manifest, bool, error) {
	found := map[string]*Manifest{}
	read := map[string]*Manifest{}
	for _, disk := range disks {
		h, ok := rec.head(disk)
		if !ok {
			continue // no point of the set has the disk
		}
		m := read[h.ID]
		if m == nil {
			var err error
			m, err = r.LoadManifest(ctx, rec.Collection, h.ID)
			if errors.Is(err, ErrNotFound) || errors.As(err, new(*CorruptError)) || errors.Is(err, ErrInvalidName) {
				r.Logger().Debug("heads record stale: a point it names cannot be read", "collection", rec.Collection, "restore_point", h.ID, "error", err)
				return nil, false, nil
			}
			if err != nil {
				return nil, false, err
			}
			read[h.ID] = m
		}
		if _, has := m.Disk(disk); !m.Created.Equal(h.Created) || (disk != "" && !has) {
			r.Logger().Debug("heads record stale: a point it names is another", "collection", rec.Collection, "restore_point", h.ID)
			return nil, false, nil
		}
		found[disk] = m
	}
	return found, true, nil
}

// rebuildHeads reads every manifest of ids, stores the heads record they
// make, and returns the newest points of disks. A record that cannot be
// stored is logged: the answer stands, and the next create tries again.
func (r *Repository) rebuildHeads(ctx context.Context, collection string, ids []string, disks []string) (map[string]*Manifest, error) {
	listed, err := r.readManifests(ctx, collection, ids)
	if err != nil {
		return nil, err
	}
	rec := &headsRecord{Version: headsVersion, Collection: collection, Disks: map[string]pointHead{}}
	rec.setSet(manifestSet{})
	byID := map[string]*Manifest{}
	for _, l := range listed {
		if l.Manifest == nil { // damaged: in the set, never a head
			rec.toggle(r, l.ID, 1)
			continue
		}
		rec.add(r, l.Manifest)
		byID[l.ID] = l.Manifest
	}
	r.headsMu.Lock()
	err = r.saveHeads(ctx, rec)
	r.headsMu.Unlock()
	if err != nil {
		r.Logger().Warn("heads record not stored: the next create rebuilds it", "collection", collection, "error", err)
	}
	found := map[string]*Manifest{}
	for _, disk := range disks {
		if h, ok := rec.head(disk); ok {
			found[disk] = byID[h.ID]
		}
	}
	return found, nil
}
