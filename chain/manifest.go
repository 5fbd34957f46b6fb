package chain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// Manifest is a VM restore point as stored: what was captured, how, and the
// block-map root of every disk. It is the object "manifests/COLLECTION/ID",
// written last, so its existence means the restore point is complete.
type Manifest struct {
	ID         string    `json:"id"`
	Collection string    `json:"collection"`
	Created    time.Time `json:"created"`
	// Consistency is the mode achieved, derived from what ran and how the
	// disks were captured, never from what was asked: crash, filesystem,
	// application, or inconsistent (not captured at one instant).
	Consistency string `json:"consistency"`
	// RequestedConsistency is the mode asked for; FallbackReason says why
	// Consistency is weaker, when it is.
	RequestedConsistency string `json:"requested_consistency"`
	FallbackReason       string `json:"fallback_reason"`
	// FreezeMillis is how long the disks were held still for capture:
	// file systems frozen, I/O paused, clones taken.
	FreezeMillis int64 `json:"freeze_ms"`
	// CaptureSpreadMillis is the time from the start of the first disk's
	// capture to the end of the last's (0 in manifests from before it was
	// recorded).
	CaptureSpreadMillis int64 `json:"capture_spread_ms"`
	// Warnings are failures that did not spoil the restore point, such as
	// a post script that failed after the disks were captured while
	// quiesced. Absent when there were none.
	Warnings []string `json:"warnings,omitempty"`
	// Config is the data blob of the VM configuration stored with the point.
	Config     ID             `json:"config,omitzero"`
	ConfigSize int64          `json:"config_size,omitempty"`
	Excluded   []string       `json:"excluded"`
	Disks      []DiskManifest `json:"disks"`
}

// DiskManifest is one disk restore point: the disk's full block map at the
// restore point's instant, and what storing it cost.
type DiskManifest struct {
	Name      string `json:"name"`
	Size      int64  `json:"size"`
	BlockSize int    `json:"block_size"`
	// Root is the block map's root node (ZeroID for an all-zero disk).
	Root ID `json:"root"`
	// Capture says how the disk was held at the restore point's instant:
	// "reflink" (a clone taken while still), "snapshotter" (the caller's),
	// "read-frozen" (read while still), or "read" (read while in use,
	// nothing holding it still: the restore point is then "inconsistent").
	Capture string `json:"capture,omitempty"`
	// Parent is the restore point this one was compared against, if any.
	Parent string `json:"parent"`
	// ChangedBytes counts the bytes of blocks that differ from Parent.
	ChangedBytes int64 `json:"changed_bytes"`
	// StoredBytes counts bytes newly added to packs for this disk:
	// compressed chunks and block-map nodes.
	StoredBytes int64 `json:"stored_bytes"`
	// MetadataBytes is the part of StoredBytes that is block-map nodes.
	MetadataBytes int64 `json:"metadata_bytes"`
	// NewChunkBytes is the plaintext size of the chunks newly stored:
	// ChangedBytes less zero blocks and duplicates, before compression.
	NewChunkBytes int64 `json:"new_chunk_bytes"`
	// ChangeSource says how the blocks that changed since Parent were
	// found: "bitmap" (a dirty bitmap's extents), "ranges" (the caller's
	// list), or "hash" (every block read and compared); ChangeReason says
	// why a bitmap asked for was not used. Bitmap names the dirty bitmap
	// that recorded the disk's writes from this point's instant on, which
	// the next restore point may read against this one. All three are
	// absent in manifests written before they existed.
	ChangeSource string `json:"change_source,omitempty"`
	ChangeReason string `json:"change_reason,omitempty"`
	Bitmap       string `json:"bitmap,omitempty"`
	// BitmapRead names the bitmap whose extents were read (ChangeSource
	// "bitmap"); a pull-mode backup reads the previous bitmap and records
	// the new one as Bitmap. Absent otherwise, and in older manifests.
	BitmapRead string `json:"bitmap_read,omitempty"`
}

// Geometry returns the disk's block-map geometry in repository r.
func (d DiskManifest) Geometry(fanout int) Geometry {
	return Geometry{Size: d.Size, BlockSize: d.BlockSize, Fanout: fanout}
}

// Disk returns the disk restore point named name.
func (m *Manifest) Disk(name string) (DiskManifest, bool) {
	for _, d := range m.Disks {
		if d.Name == name {
			return d, true
		}
	}
	return DiskManifest{}, false
}

const manifestPrefix = "manifests/"

func manifestName(collection, id string) string {
	return manifestPrefix + collection + "/" + id
}

// CheckName is the one rule for names: collection, disk, restore point and
// hook log names, and each element of an object name ([CheckObjectName]):
// 1 to 255 bytes of ASCII letters (either case), digits, '.', '_' and '-',
// not starting with '.' (so never "." or ".."). Case matters: "VM1" and
// "vm1" are two collections. Path separators, control characters and
// anything else are refused, so a name can never escape its place in the
// repository or confuse a terminal.
func CheckName(kind, name string) error {
	if name == "" {
		return fmt.Errorf("%s name is empty: %w", kind, ErrInvalidName)
	}
	if len(name) > 255 {
		return fmt.Errorf("%s name of %d bytes is over 255: %w", kind, len(name), ErrInvalidName)
	}
	if name[0] == '.' {
		return fmt.Errorf("%s name %q starts with '.': %w", kind, name, ErrInvalidName)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' {
			continue
		}
		r, _ := utf8.DecodeRuneInString(name[i:])
		return fmt.Errorf("%s name %q: character %q is not allowed (use letters, digits, '.', '_', '-'): %w", kind, name, r, ErrInvalidName)
	}
	return nil
}

func (m *Manifest) check() error {
	if err := CheckName("collection", m.Collection); err != nil {
		return err
	}
	if err := CheckName("restore point", m.ID); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, d := range m.Disks {
		if err := CheckName("disk", d.Name); err != nil {
			return err
		}
		if seen[d.Name] {
			return fmt.Errorf("disk %q appears twice: %w", d.Name, ErrInvalidName)
		}
		seen[d.Name] = true
		if d.Size <= 0 || CheckBlockSize(d.BlockSize) != nil {
			return fmt.Errorf("disk %q: size %d, block size %d", d.Name, d.Size, d.BlockSize)
		}
	}
	return nil
}

func (r *Repository) saveManifest(ctx context.Context, m *Manifest) error {
	if err := m.check(); err != nil {
		return fmt.Errorf("save restore point: %w", err)
	}
	name := manifestName(m.Collection, m.ID)
	data, err := jsonIndent(m)
	if err != nil {
		return err
	}
	// Created only: a restore point, once committed, is never replaced, not
	// even by a writer in another process that chose the same ID.
	if err := r.store.PutIfAbsent(ctx, name, r.sealObject(name, data)); err != nil {
		return fmt.Errorf("save restore point %s/%s: %w", m.Collection, m.ID, err)
	}
	// After the manifest: a crash between the two leaves a record whose
	// set lacks the point, which NewestManifests sees and rebuilds.
	r.headsAfterSave(ctx, m)
	return nil
}

// decodeManifest parses a stored manifest and checks that it is well formed.
func decodeManifest(object string, data []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, corrupt(object, "%v", err)
	}
	if err := m.check(); err != nil {
		return nil, corrupt(object, "%v", err)
	}
	return &m, nil
}

// LoadManifest reads the restore point id of collection.
func (r *Repository) LoadManifest(ctx context.Context, collection, id string) (*Manifest, error) {
	if err := CheckName("collection", collection); err != nil {
		return nil, err
	}
	if err := CheckName("restore point", id); err != nil {
		return nil, err
	}
	m, err := r.readManifest(ctx, manifestName(collection, id))
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("restore point %q in collection %q: %w", id, collection, ErrNotFound)
	}
	return m, err
}

// readManifest reads, opens and decodes the manifest object name, and
// checks that it says it is what its name says.
func (r *Repository) readManifest(ctx context.Context, name string) (*Manifest, error) {
	data, err := r.store.Get(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("restore point %s: %w", strings.TrimPrefix(name, manifestPrefix), err)
	}
	if data, err = r.openObject(name, data); err != nil {
		return nil, err
	}
	m, err := decodeManifest(name, data)
	if err != nil {
		return nil, err
	}
	if manifestName(m.Collection, m.ID) != name {
		return nil, corrupt(name, "it says it is %s/%s", m.Collection, m.ID)
	}
	return m, nil
}

// ListManifests returns the restore points of collection, oldest first. A
// damaged manifest is left out: the others stay usable, and Verify names
// it ([Repository.ListManifestsWithDamaged] lists it too).
func (r *Repository) ListManifests(ctx context.Context, collection string) ([]*Manifest, error) {
	listed, err := r.ListManifestsWithDamaged(ctx, collection)
	if err != nil {
		return nil, err
	}
	out := make([]*Manifest, 0, len(listed))
	for _, l := range listed {
		if l.Damage == nil {
			out = append(out, l.Manifest)
		}
	}
	return out, nil
}

// ListedManifest is one restore point of a collection as
// ListManifestsWithDamaged found it: its manifest, or why that cannot be
// read.
type ListedManifest struct {
	ID string
	// Manifest is the restore point; nil when Damage is set.
	Manifest *Manifest
	// Damage, when set, says why the manifest cannot be used: it wraps
	// ErrCorrupt (or ErrInvalidName for an object whose name no restore
	// point can have).
	Damage error
	// Stored is when the store says the manifest was written: for a
	// damaged one, the only time known.
	Stored time.Time
}

// ListManifestsWithDamaged returns every restore point of collection,
// damaged ones included, oldest first (a damaged one by the time it was
// stored), so that a listing can show them rather than hide them.
//
// It lists names only (no size or time of every manifest: see
// [NameLister]), reads the manifests a few at a time, and asks the store
// for the time of the damaged ones alone.
func (r *Repository) ListManifestsWithDamaged(ctx context.Context, collection string) ([]ListedManifest, error) {
	ids, err := r.ListManifestIDs(ctx, collection)
	if err != nil {
		return nil, err
	}
	out, err := r.readManifests(ctx, collection, ids)
	if err != nil {
		return nil, err
	}
	for i := range out {
		if out[i].Damage == nil {
			continue
		}
		info, err := r.store.Stat(ctx, manifestName(collection, out[i].ID))
		switch {
		case errors.Is(err, ErrNotFound):
			out[i].ID = "" // deleted since it was read
		case err != nil:
			return nil, fmt.Errorf("restore point %s/%s: %w", collection, out[i].ID, err)
		default:
			out[i].Stored = info.ModTime
		}
	}
	out = slices.DeleteFunc(out, func(l ListedManifest) bool { return l.ID == "" })
	created := func(l ListedManifest) time.Time {
		if l.Manifest != nil {
			return l.Manifest.Created
		}
		return l.Stored
	}
	sort.Slice(out, func(i, j int) bool {
		if a, b := created(out[i]), created(out[j]); !a.Equal(b) {
			return a.Before(b)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// manifestReaders is how many manifests a listing reads at once: each is
// a small object, and opening, reading and decoding it is mostly system
// calls and JSON, which a few goroutines overlap.
const manifestReaders = 8

// readManifests reads the restore points ids of collection, in that order,
// a few at a time. One deleted meanwhile is left out; a damaged one is
// listed with its Damage (and no Stored time: the caller asks for it).
// Any other error stops it.
func (r *Repository) readManifests(ctx context.Context, collection string, ids []string) ([]ListedManifest, error) {
	out := make([]ListedManifest, len(ids))
	// A few workers that each take the next ID, rather than a goroutine
	// per manifest: 10,000 new goroutines grow 10,000 stacks.
	err := inWorkers(ctx, manifestReaders, len(ids), func(ctx context.Context) func(i int) error {
		return func(i int) error {
			id := ids[i]
			m, err := r.LoadManifest(ctx, collection, id)
			switch {
			case errors.Is(err, ErrNotFound):
				// deleted while we listed: left out (ID "")
			case errors.As(err, new(*CorruptError)) || errors.Is(err, ErrInvalidName):
				out[i] = ListedManifest{ID: id, Damage: err}
			case err != nil:
				return err
			default:
				out[i] = ListedManifest{ID: id, Manifest: m}
			}
			return nil
		}
	})
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(out, func(l ListedManifest) bool { return l.ID == "" }), nil
}

// ListManifestIDs returns the IDs of collection's restore points, sorted,
// without reading them: one listing of names, however many points there
// are.
func (r *Repository) ListManifestIDs(ctx context.Context, collection string) ([]string, error) {
	ids, err := r.manifestIDs(ctx, collection)
	sort.Strings(ids)
	return ids, err
}

// manifestIDs is ListManifestIDs in the order the store lists them.
func (r *Repository) manifestIDs(ctx context.Context, collection string) ([]string, error) {
	if err := CheckName("collection", collection); err != nil {
		return nil, err
	}
	prefix := manifestPrefix + collection + "/"
	var ids []string
	if err := eachName(ctx, r.store, prefix, func(name string) error {
		ids = append(ids, name[len(prefix):])
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list restore points of %q: %w", collection, err)
	}
	return ids, nil
}

// ListCollections returns the names of the collections that have restore points.
func (r *Repository) ListCollections(ctx context.Context) ([]string, error) {
	names, err := listNames(ctx, r.store, manifestPrefix)
	if err != nil {
		return nil, fmt.Errorf("list collections: %w", err)
	}
	seen := map[string]bool{}
	var out []string
	for _, name := range names {
		c, _, ok := strings.Cut(strings.TrimPrefix(name, manifestPrefix), "/")
		if ok && !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	sort.Strings(out)
	return out, nil
}

// DeleteManifest deletes a restore point. Other restore points never depend
// on it; the space only it used is reclaimed by the next GC.
func (r *Repository) DeleteManifest(ctx context.Context, collection, id string) error {
	if _, err := r.LoadManifest(ctx, collection, id); err != nil && !errors.As(err, new(*CorruptError)) {
		return fmt.Errorf("delete: %w", err)
	}
	// A store may report a missing object as deleted or as not found; a
	// restore point deleted meanwhile by someone else is gone either way.
	if err := r.store.Delete(ctx, manifestName(collection, id)); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("delete restore point %s/%s: %w", collection, id, err)
	}
	r.headsAfterDelete(ctx, collection, id)
	return nil
}
