package chain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// MigrateOptions tunes Migrate.
type MigrateOptions struct {
	// LockWait: wait this long for creates, GCs and verifies, here or in
	// other processes, to finish; 0 fails at once with ErrLocked.
	LockWait time.Duration
	// Progress, if set, is called as the migration goes: through the index
	// files it reads, the version 2 files it writes, and the version 1
	// files it deletes.
	Progress func(MigrateProgress)
}

// MigrateProgress says how far a migration is: Done of Total in its
// current phase.
type MigrateProgress struct {
	// Phase is "read" (version 1 index files read), "write" (version 2
	// index files written) or "delete" (version 1 index files deleted);
	// an encrypted repository's migration also has "packs" (version 1
	// packs converted), "stage" (objects sealed for version 2) and "move"
	// (those put in place after the switch), and deletes its version 1
	// packs in "delete" too.
	Phase       string
	Done, Total int64
}

func (o MigrateOptions) report(phase string, done, total int) {
	if o.Progress != nil {
		o.Progress(MigrateProgress{Phase: phase, Done: int64(done), Total: int64(total)})
	}
}

// MigrateReport says what a migration did.
type MigrateReport struct {
	// FromVersion is the version the repository's config said when the
	// migration began: 1, or 2 for a repository already converted (by this
	// run's predecessor, perhaps interrupted after its switch).
	FromVersion int `json:"from_version"`
	// Converted: this run switched the config to version 2.
	Converted bool `json:"converted"`
	// NothingToDo: the repository was version 2 already, with no version 1
	// index file left: the run changed nothing.
	NothingToDo bool `json:"nothing_to_do"`
	// V1IndexFiles: version 1 index files read (and then deleted).
	V1IndexFiles int `json:"v1_index_files_read"`
	// V1IndexFilesDeleted: version 1 index files deleted.
	V1IndexFilesDeleted int `json:"v1_index_files_deleted"`
	// V2IndexFilesWritten: version 2 index files written by this run;
	// V2IndexFilesReused: those an interrupted run had written already,
	// byte for byte the same, kept as they were.
	V2IndexFilesWritten int `json:"v2_index_files_written"`
	V2IndexFilesReused  int `json:"v2_index_files_reused"`
	// StaleV2IndexFiles: version 2 index files an interrupted run left
	// that this run's files replace, deleted before the switch.
	StaleV2IndexFiles int `json:"stale_v2_index_files_deleted"`
	// Blobs: the blobs the new index files list.
	Blobs int `json:"blobs"`

	// Of an encrypted repository (whose packs are all rewritten):
	// V1Packs: version 1 packs read and converted; V2PacksWritten: the
	// version 2 packs written for them, V2PacksReused: those an
	// interrupted run had written already (the same name, so the same
	// bytes); StaleV2Packs: version 2 packs an interrupted run wrote for
	// version 1 packs gone since, deleted before the switch.
	V1Packs        int `json:"v1_packs_converted,omitempty"`
	V2PacksWritten int `json:"v2_packs_written,omitempty"`
	V2PacksReused  int `json:"v2_packs_reused,omitempty"`
	StaleV2Packs   int `json:"stale_v2_packs_deleted,omitempty"`
	// ObjectsResealed: manifests, state, logs, garbage records and the
	// lock sealed for version 2 (staged until the switch); ObjectsMoved:
	// those put in place of their version 1 objects after the switch.
	ObjectsResealed int `json:"objects_resealed,omitempty"`
	ObjectsMoved    int `json:"objects_moved,omitempty"`
	// V1PacksDeleted: version 1 packs deleted after the switch.
	V1PacksDeleted int `json:"v1_packs_deleted,omitempty"`
}

// Migrate converts a version 1 repository to version 2 in place. In a
// plain repository packs, manifests, garbage records and everything else
// stay as they are (a plain version 2 repository lays them out as version
// 1 does); only the index changes. Under the exclusive lock it:
//
//  1. reads every version 1 index file and writes version 2 index files
//     listing exactly the blobs they list (files an interrupted run wrote
//     are reused when they are the same bytes, and deleted otherwise);
//  2. switches the config to version 2, in one atomic Put;
//  3. deletes the version 1 index files.
//
// It can be stopped at any point and run again: before the switch the
// repository is version 1 and its version 1 index files are all there;
// after it, the version 2 files list every blob, and a rerun finishes
// deleting the version 1 files (converting into version 2 files any blob
// of theirs that those do not list). On a version 2 repository with no
// version 1 index file left it changes nothing and says so (NothingToDo).
// See FORMAT.md, "Migrating version 1 to version 2".
//
// An encrypted version 1 repository (r opened with its key) is converted
// to an encrypted version 2 one whose key ring's first key is that key:
// every pack, index file and sealed object is sealed again, blob IDs stay
// (see migrateEncrypted and FORMAT.md, "Migrating an encrypted
// repository"); a password is added afterwards with AddKey. A
// version 1 index file that is damaged stops the migration before anything
// is written (run GC first, which rewrites the index). Afterwards r is a
// version 2 repository; nothing else may use r while Migrate runs.
func (r *Repository) Migrate(ctx context.Context, opts MigrateOptions) (report MigrateReport, err error) {
	lock, err := r.lockWaitAnyFormat(ctx, true, "migrate", opts.LockWait)
	if err != nil {
		return report, fmt.Errorf("migrate: %w", err)
	}
	defer lock.unlock()
	ctx = lock.ctx
	defer func() {
		if lost := lock.lost(); err != nil && lost != nil && !errors.Is(err, ErrLockLost) {
			err = fmt.Errorf("migrate: %w, so it stopped: %w", lost, err)
		}
	}()
	// The config as it is now, under the lock: another migration may have
	// switched it since r was opened.
	data, err := r.store.Get(ctx, configName)
	if err != nil {
		return report, fmt.Errorf("migrate: read config: %w", err)
	}
	cfg, err := decodeConfig(data)
	if err != nil {
		return report, fmt.Errorf("migrate: %w", err)
	}
	report.FromVersion = cfg.Version
	m := &migration{store: r.raw, opts: opts, report: &report}
	if cfg.Encryption != "" {
		if err := r.migrateEncrypted(ctx, lock, cfg, m); err != nil {
			return report, fmt.Errorf("migrate: %w", err)
		}
		report.NothingToDo = !report.Converted && report.V1IndexFilesDeleted == 0 && report.V1PacksDeleted == 0 && report.ObjectsMoved == 0
		return report, nil
	}
	if cfg.Version == FormatVersion {
		if err := m.writeV2Files(ctx); err != nil {
			return report, fmt.Errorf("migrate: %w", err)
		}
		// Not without the lock: a GC that took it for stale may be
		// changing the index (the lock's context ends too, but say why).
		if lost := lock.lost(); lost != nil {
			return report, fmt.Errorf("migrate: the config was not switched: %w", lost)
		}
		if err := r.switchConfig(ctx, cfg); err != nil {
			return report, fmt.Errorf("migrate: %w", err)
		}
		report.Converted = true
	} else {
		r.useVersion2(cfg)
	}
	if err := m.finish(ctx); err != nil {
		return report, fmt.Errorf("migrate: %w", err)
	}
	report.NothingToDo = !report.Converted && report.V1IndexFilesDeleted == 0 && report.V2IndexFilesWritten == 0
	return report, nil
}

// migration is one run of Migrate.
type migration struct {
	store  Store
	opts   MigrateOptions
	report *MigrateReport
	// For an encrypted repository (migrateencrypted.go): out seals the
	// version 2 index files (written and compared through it), whose
	// stored bytes begin with v2Magic; convert moves a version 1 entry to
	// the version 2 pack its pack became. Unset, version 2 files are
	// plain, in store.
	out     Store
	v2Magic string
	convert func(indexEntry) (indexEntry, error)
}

// v2Store is where version 2 index files are written and read.
func (m *migration) v2Store() Store {
	if m.out != nil {
		return m.out
	}
	return m.store
}

// v2FileMagic is the first four bytes of a stored version 2 index file.
func (m *migration) v2FileMagic() string {
	if m.v2Magic != "" {
		return m.v2Magic
	}
	return indexV2Magic
}

// indexFileMagic returns the first four bytes of the index file info
// names ("dpi1" or "dpi2" when it is one), or "" when it is shorter.
func (m *migration) indexFileMagic(ctx context.Context, info ObjectInfo) (string, error) {
	var magic [len(indexMagic)]byte
	if info.Size < int64(len(magic)) {
		return "", nil
	}
	if err := m.store.ReadAt(ctx, info.Name, magic[:], 0); err != nil {
		return "", fmt.Errorf("read index: %s: %w", info.Name, err)
	}
	return string(magic[:]), nil
}

// writeV2Files reads every index file of a version 1 repository and makes
// sure version 2 index files list every blob the version 1 files list.
// The files are named by their bytes, and their bytes follow from the
// version 1 files alone (their written time is the newest of theirs), so
// a rerun over the same version 1 files writes the same files: those an
// interrupted run wrote are reused, and any other version 2 file (from a
// run over other version 1 files) is deleted.
func (m *migration) writeV2Files(ctx context.Context) error {
	infos, err := listObjects(ctx, m.store, indexPrefix)
	if err != nil {
		return fmt.Errorf("list index: %w", err)
	}
	slices.SortFunc(infos, func(a, b ObjectInfo) int { return strings.Compare(a.Name, b.Name) })
	// A version 1 entry takes at least 37 bytes (type, flags, three
	// one-byte varints, the ID), so the files' sizes bound the entries:
	// allocated once, not grown and copied.
	var size int64
	for _, info := range infos {
		size += info.Size
	}
	entries := make([]indexEntry, 0, size/(2+3+IDSize))
	var newest time.Time
	v2 := map[string]bool{} // version 2 files already here: an interrupted run's
	for i, info := range infos {
		m.opts.report("read", i, len(infos))
		magic, err := m.indexFileMagic(ctx, info)
		if err != nil {
			return err
		}
		if magic == m.v2FileMagic() {
			// Only a migration writes version 2 files into a version 1
			// repository; sound or not, this run decides whether it stays.
			v2[info.Name] = true
			continue
		}
		data, err := m.store.Get(ctx, info.Name)
		if err != nil {
			return fmt.Errorf("read index: %w", err)
		}
		if Hash(data).String() != strings.TrimPrefix(info.Name, indexPrefix) {
			return fmt.Errorf("%w (nothing was changed; run gc, which rewrites the index, then migrate again)", corrupt(info.Name, "content does not match its name"))
		}
		packs, err := decodeIndexFile(data)
		if err != nil {
			return fmt.Errorf("%w (nothing was changed; run gc, which rewrites the index, then migrate again)", corrupt(info.Name, "%v", err))
		}
		for _, p := range packs {
			for _, e := range p.Entries {
				entry := indexEntry{packEntry: e, Pack: p.ID}
				if m.convert != nil {
					if entry, err = m.convert(entry); err != nil {
						return fmt.Errorf("%s: %w", info.Name, err)
					}
				}
				entries = append(entries, entry)
			}
		}
		if info.ModTime.After(newest) {
			newest = info.ModTime
		}
		m.report.V1IndexFiles++
	}
	m.opts.report("read", len(infos), len(infos))
	// Of a blob listed twice the first listing stays, in name order, as a
	// version 1 index loaded in that order serves it.
	slices.SortStableFunc(entries, func(a, b indexEntry) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	entries = slices.CompactFunc(entries, func(a, b indexEntry) bool { return a.ID == b.ID })
	m.report.Blobs = len(entries)
	files := (len(entries) + maxIndexEntries - 1) / maxIndexEntries
	wanted := map[string]bool{}
	for i := 0; len(entries) > 0; i++ {
		m.opts.report("write", i, files)
		piece := entries[:min(len(entries), maxIndexEntries)]
		entries = entries[len(piece):]
		data, err := encodeIndexV2(piece, newest)
		if err != nil {
			return err
		}
		name := indexPrefix + Hash(data).String()
		wanted[name] = true
		if v2[name] && m.sameObject(ctx, name, data) {
			m.report.V2IndexFilesReused++
			continue
		}
		if err := m.v2Store().Put(ctx, name, data); err != nil {
			return fmt.Errorf("write index: %w", err)
		}
		m.report.V2IndexFilesWritten++
	}
	m.opts.report("write", files, files)
	for name := range v2 {
		if wanted[name] {
			continue
		}
		if err := m.store.Delete(ctx, name); err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("delete stale version 2 index file: %w", err)
		}
		m.report.StaleV2IndexFiles++
	}
	return nil
}

// sameObject reports whether the object name holds exactly data.
func (m *migration) sameObject(ctx context.Context, name string, data []byte) bool {
	have, err := m.v2Store().Get(ctx, name)
	return err == nil && bytes.Equal(have, data)
}

// switchConfig rewrites the config as version 2: one Put, which a store
// makes atomic, so the repository is version 1 or version 2 and never
// anything between. The version 2 index files are durable by then.
func (r *Repository) switchConfig(ctx context.Context, cfg Config) error {
	cfg.Version = FormatVersion2
	data, err := jsonIndent(cfg)
	if err != nil {
		return err
	}
	if _, err := decodeConfig(data); err != nil {
		return fmt.Errorf("the version 2 config: %w", err)
	}
	if err := r.store.Put(ctx, configName, data); err != nil {
		return fmt.Errorf("switch config to version 2: %w", err)
	}
	r.useVersion2(cfg)
	return nil
}

// useVersion2 makes r read and write the repository as version 2 from now
// on: its index is loaded afresh, as version 2 files, when next needed.
func (r *Repository) useVersion2(cfg Config) {
	if r.config.Version == FormatVersion2 {
		return
	}
	r.idxMu.Lock()
	defer r.idxMu.Unlock()
	r.config = cfg
	r.idx = newUnloadedIndexV2Set()
}

// finish deletes the version 1 index files of a repository switched to
// version 2. On a rerun, a blob one of them lists that no version 2 file
// does (a version 1 writer that opened the repository before the switch
// and indexed after it) is first written into a version 2 file, so that
// nothing the version 1 files promised is lost.
func (m *migration) finish(ctx context.Context) error {
	infos, err := listObjects(ctx, m.store, indexPrefix)
	if err != nil {
		return fmt.Errorf("list index: %w", err)
	}
	slices.SortFunc(infos, func(a, b ObjectInfo) int { return strings.Compare(a.Name, b.Name) })
	var v1 []ObjectInfo
	var v2 []*indexV2Reader
	for _, info := range infos {
		magic, err := m.indexFileMagic(ctx, info)
		if err != nil {
			return err
		}
		if magic == indexMagic {
			v1 = append(v1, info)
			continue
		}
		f, err := openIndexV2(ctx, info.Name, storeObjectRange{m.store, info.Name}, info.Size)
		if err != nil {
			if errors.As(err, new(*CorruptError)) {
				continue // damaged: not one that can vouch for a blob
			}
			return err
		}
		v2 = append(v2, f)
	}
	if len(v1) == 0 {
		return nil
	}
	// A run that switched the config wrote its version 2 files from these
	// very version 1 files, under the lock: nothing can be missing. A
	// rerun after a switch cannot know that, so it looks.
	if m.report.FromVersion == FormatVersion2 {
		m.report.V1IndexFiles = len(v1)
		if err := m.keepUnlisted(ctx, v1, v2); err != nil {
			return err
		}
	}
	for i, f := range v1 {
		m.opts.report("delete", i, len(v1))
		if err := m.store.Delete(ctx, f.Name); err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("delete version 1 index file: %w", err)
		}
		m.report.V1IndexFilesDeleted++
	}
	m.opts.report("delete", len(v1), len(v1))
	return nil
}

// keepUnlisted writes version 2 files for the blobs that the version 1
// files list and no version 2 file does. After an ordinary interrupted
// run there are none: the version 2 files were written from these very
// version 1 files before the switch.
func (m *migration) keepUnlisted(ctx context.Context, v1 []ObjectInfo, v2 []*indexV2Reader) error {
	var missing []indexEntry
	var newest time.Time
	for _, f := range v1 {
		packs, err := readIndexFile(ctx, m.store, f.Name)
		if errors.As(err, new(*CorruptError)) {
			continue // a damaged file vouches for nothing: its packs are recovered from their headers
		}
		if err != nil {
			return err
		}
		for _, p := range packs {
			for _, e := range p.Entries {
				listed, err := listedIn(ctx, v2, e.ID)
				if err != nil {
					return err
				}
				if !listed {
					missing = append(missing, indexEntry{packEntry: e, Pack: p.ID})
					newest = later(newest, f.ModTime)
				}
			}
		}
	}
	slices.SortStableFunc(missing, func(a, b indexEntry) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	missing = slices.CompactFunc(missing, func(a, b indexEntry) bool { return a.ID == b.ID })
	for len(missing) > 0 {
		piece := missing[:min(len(missing), maxIndexEntries)]
		missing = missing[len(piece):]
		data, err := encodeIndexV2(piece, newest)
		if err != nil {
			return err
		}
		if err := m.store.Put(ctx, indexPrefix+Hash(data).String(), data); err != nil {
			return fmt.Errorf("write index: %w", err)
		}
		m.report.V2IndexFilesWritten++
		m.report.Blobs += len(piece)
	}
	return nil
}

// listedIn reports whether any of files lists blob id.
func listedIn(ctx context.Context, files []*indexV2Reader, id ID) (bool, error) {
	for _, f := range files {
		_, _, ok, err := f.lookup(ctx, id)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
