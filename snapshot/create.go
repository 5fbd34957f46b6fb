package snapshot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/diskpoint/diskpoint/blockdiff"
	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/consistency"
)

// DiskSource is one disk to capture.
type DiskSource struct {
	// Name identifies the disk within the collection ("os", "data0"); the
	// next restore point compares against the last one with the same name.
	Name string
	// Path is a disk image file or a block device.
	Path string
	// Reader and Size give a disk that is not a file instead of Path
	// (exactly one of the two): its first Size bytes, read through
	// Reader.ReadAt, from several goroutines at once. For tests,
	// benchmarks and callers whose disks are not files (a hypervisor's NBD
	// client, say). Such a disk has no reflink clone and no Snapshotter can
	// take it: it is read as it is, while hooks hold it still if they do,
	// and the restore point's consistency says so as for any live read.
	// Every block is read; the caller closes Reader.
	Reader io.ReaderAt
	Size   int64
	// NBD, instead of Path or Reader, is the URI of an NBD export
	// (nbd://HOST:PORT/EXPORT, nbd+unix:///EXPORT?socket=PATH): a running
	// VM's disk that QEMU, qemu-storage-daemon, qemu-nbd or nbdkit serve.
	// It is read like a Reader, over several connections where the server
	// allows them, except the ranges its base:allocation says read as
	// zeroes, which are not read at all. The allocation (and a Bitmap's
	// extents) are asked for when the disk is opened, before any hook runs:
	// export a view that does not change (a fleecing node, a stopped VM's
	// image) for a restore point that is more than a live read.
	NBD string
	// Bitmap, for an NBD disk, names a QEMU dirty bitmap the server exports
	// (qemu:dirty-bitmap:NAME, qemu-nbd -B NAME). When the disk's previous
	// restore point was taken with the same bitmap, only the blocks its
	// dirty extents touch are read, and the restore point records
	// change_source "bitmap". A bitmap the server does not have, or a
	// previous restore point taken without it (the bitmap may have started
	// after it, and missed writes), is never trusted: every block is read
	// and compared ("hash"), and the reason is recorded. The restore point
	// records the bitmap, so that the next one may trust it against this one;
	// the bitmap must keep recording writes (not be cleared) until then.
	Bitmap string
	// NextBitmap, for an NBD disk, is the bitmap the restore point records
	// for the next one to read against, when it is not Bitmap: a pull-mode
	// backup (package qemu) reads the previous bitmap's extents from a
	// frozen view and starts NextBitmap at that view's instant. The restore
	// point records Bitmap as bitmap_read when its extents were used.
	NextBitmap string
	// HeldStill, for an NBD disk, says the export is a view frozen at one
	// instant (a pull-mode backup's fleecing node, qemu.PullExport) and is
	// how long taking it held the guest's writes up (its transaction): the
	// disk is not read live, and freeze_ms counts the window.
	HeldStill time.Duration

	// What opening an NBD disk with a Bitmap found: whether the server has
	// it, and its dirty ranges.
	bitmapFound bool
	dirty       []blockdiff.Range
	// ChangedOnly says Changed lists every byte range written since the
	// disk's previous restore point (a hypervisor's dirty bitmap): only
	// blocks those ranges touch are read. Without a previous restore point
	// of the disk, the whole disk is read anyway.
	ChangedOnly bool
	Changed     []blockdiff.Range
}

// CreateOptions configure Create.
type CreateOptions struct {
	Disks []DiskSource
	// Exclude names disks of Disks to leave out of this restore point.
	Exclude []string
	// VMConfig is stored with the restore point (a VM definition, say).
	VMConfig []byte
	// Workers per disk that read and hash; 0 means GOMAXPROCS.
	Workers int
	// Progress, if set, is called as each disk's scan advances.
	Progress func(Progress)

	// Consistency is the mode asked for; "" means crash. What was achieved,
	// and why it is weaker if it is, is recorded in the restore point.
	Consistency consistency.Mode
	// Hooks quiesce for the mode: application hooks run in application
	// mode, file-system hooks in filesystem and application modes, pause
	// hooks in every mode. Without application hooks a restore point is
	// never application-consistent; without file-system hooks (or a
	// ConsistentSnapshotter that quiesces) never file-system-consistent.
	Hooks []consistency.Hook
	// MaxFreeze bounds the freeze window (default consistency.DefaultMaxFreeze).
	MaxFreeze time.Duration
	// ReadyTimeout bounds the wait for hooks to be ready.
	ReadyTimeout time.Duration
	// OnFailure says what to do when a hook fails to freeze: fall back
	// (the default), fail, or skip.
	OnFailure consistency.OnFailure
	// SkipAfterFailure is how many application-consistent requests are taken
	// file-system-consistent after application hooks failed (default 3).
	SkipAfterFailure int
	// Snapshotter captures the disks while they are held still, when the
	// built-in capture (reflink clones of image files; reading block devices
	// while frozen) does not fit. Several disks count as captured at one
	// instant only if a hook holds them still or the snapshotter is a
	// ConsistentSnapshotter that says it snapshots them atomically.
	Snapshotter blockdiff.Snapshotter
	// SpoolMemory bounds the memory that holds, from the freeze window to
	// the thaw, the changed blocks and block IDs of disks read while held
	// still (disks that can be neither cloned nor snapshotted): inside the
	// window they are only read, hashed and kept; compressing and storing
	// them waits for the thaw. Beyond SpoolMemory bytes they go to a
	// temporary file, in the repository's directory when it is local, else
	// in os.TempDir (which must then not be on a file system the hooks
	// freeze); it is unlinked as soon as it is created. 0 means
	// DefaultSpoolMemory; a negative value keeps nothing in memory.
	SpoolMemory int64
	// RateLimit, if set, limits creates per collection and requested mode;
	// a refused create returns a *ThrottledError.
	RateLimit *RateLimit
	// LockWait: when another create of the collection, or a GC (in this
	// process or another), is running, wait up to this long for it; 0
	// returns ErrLocked at once.
	LockWait time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Progress reports a create's advance on one disk.
type Progress struct {
	Disk  string
	Scan  blockdiff.Stats
	Bytes int64 // bytes added to the repository for this disk so far
}

// maxVMConfig bounds the configuration blob: it is metadata, not a disk.
const maxVMConfig = 16 << 20

// Create takes a restore point of the given disks, consistent as
// opts.Consistency asks: hooks quiesce applications and freeze file
// systems, every disk is captured at one instant (reflink clones, the
// caller's snapshotter, or reading while frozen), everything is thawed, and
// only then are the captured disks read, compared with their previous
// restore points in this collection, and their changed blocks stored (a
// disk read while frozen is read and compared inside the window, its
// changed blocks kept in a spool, see SpoolMemory, and stored after). The
// restore point becomes visible only when every disk's block map is
// durable; if Create fails, nothing is visible and what was written is
// garbage for GC.
//
// The restore point records the consistency achieved, derived from what
// ran and succeeded and how the disks were captured (consistency.Judge),
// never the mode asked for, and why it is weaker (FallbackReason). Disks
// that can be neither cloned nor snapshotted, with no hook holding them
// still, are read as they are; such a restore point, like one of several
// disks captured one after another with nothing holding them still, is
// labelled consistency.Inconsistent, not refused: the bytes are what was
// read, which is all a backup of an idle disk needs, and the label keeps
// anyone from taking it for a crash-consistent point. A post script that
// fails after the disks were captured while quiesced keeps the restore
// point, with a Warning, unless OnFailure is Fail.
//
// Only one create runs per collection at a time (ErrLocked otherwise).
//
// Every reflink clone and snapshot the capture makes is released exactly
// once. A release that fails leaves a clone or snapshot taking space, so it
// is an error (wrapping ErrReleaseFailed) and a run in the hook log (hook
// "capture", phase "release"): joined into the error of a create that
// failed anyway, or, when the restore point was stored, returned WITH the
// restore point by an error saying that it is stored but cleanup failed.
// A capture that overran MaxFreeze and ignores its context (FICLONE cannot
// be interrupted) does not hold Create up: Create returns the
// ErrFreezeTimeout at once, and what the capture made is released when it
// ends; a failure then can only be logged (hook log and slog).
func (c *Collection) Create(ctx context.Context, opts CreateOptions) (rp *RestorePoint, err error) {
	requested, err := consistency.ParseMode(string(opts.Consistency))
	if err != nil {
		return nil, fmt.Errorf("create in %q: %w", c.name, err)
	}
	disks, excluded, err := c.selectDisks(opts)
	if err != nil {
		return nil, err
	}
	if len(opts.VMConfig) > maxVMConfig {
		return nil, fmt.Errorf("create in %q: VM config of %d bytes is over the %d-byte limit", c.name, len(opts.VMConfig), maxVMConfig)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	if opts.SkipAfterFailure == 0 {
		opts.SkipAfterFailure = consistency.DefaultSkipAfterFailure
	}
	if progress := opts.Progress; progress != nil {
		var mu sync.Mutex // disks report from their own goroutines; callers get one at a time
		opts.Progress = func(p Progress) {
			mu.Lock()
			defer mu.Unlock()
			progress(p)
		}
	}

	cp := newCapture(c, opts)
	hookLog := &hookLog{logger: c.repo.chain.Logger()}
	pointID := ""
	defer func() { err = c.endCreate(ctx, cp, hookLog, pointID, rp, err) }()
	for _, src := range disks {
		live, err := src.open(ctx, opts.Snapshotter != nil)
		if err != nil {
			return nil, fmt.Errorf("create in %q: disk %q: %w", c.name, src.Name, err)
		}
		cp.disks = append(cp.disks, &diskCapture{src: src, live: live})
	}

	unlock, err := c.repo.chain.LockCollection(ctx, c.name, "create", opts.LockWait)
	if err != nil {
		return nil, fmt.Errorf("create in %q: %w", c.name, err)
	}
	defer unlock()
	st, err := loadState(ctx, c.repo.chain, c.name)
	if err != nil {
		return nil, err
	}
	if opts.RateLimit != nil {
		wait, recent := opts.RateLimit.retryAfter(st.Creates[requested], now())
		if wait > 0 {
			return nil, &ThrottledError{Collection: c.name, What: string(requested) + "-consistent creates", Limit: *opts.RateLimit, RetryAfter: wait}
		}
		if st.Creates == nil {
			st.Creates = map[consistency.Mode][]time.Time{}
		}
		st.Creates[requested] = recent
	}
	w, err := c.repo.chain.NewWriterWait(ctx, "create "+c.name, opts.LockWait)
	if err != nil {
		return nil, fmt.Errorf("create in %q: %w", c.name, err)
	}
	cp.w = w // closed by cp.end, after anything the capture may still write

	// The parent is chosen under the writer lock: a GC that ran before it
	// was visible may have collected a point deleted meanwhile, and every
	// GC from now on waits for this create.
	names := make([]string, len(cp.disks))
	for i, d := range cp.disks {
		names[i] = d.src.Name
	}
	parents, err := c.newestWithDisks(ctx, names, true)
	if err != nil {
		return nil, err
	}
	for _, d := range cp.disks {
		d.parent = parentOf(parents[d.src.Name], d.src.Name)
	}

	m := chain.Manifest{
		ID:                   newRestorePointID(now()),
		Collection:           c.name,
		RequestedConsistency: string(requested),
		Excluded:             excluded,
	}
	pointID = m.ID // from now on the create has a hook log

	// Quiesce, capture, thaw: the part that must be short.
	effective, skipped := st.Fallback.Decide(requested)
	coord := consistency.Coordinator{
		Hooks: opts.Hooks, MaxFreeze: opts.MaxFreeze, ReadyTimeout: opts.ReadyTimeout,
		OnFailure: opts.OnFailure, Log: hookLog.add,
	}
	out, err := coord.RunHeld(ctx, effective, cp.taker())
	if effective != requested || out.ApplicationFailed {
		st.Fallback.Record(out, opts.SkipAfterFailure, now())
		if serr := st.save(ctx, c.repo.chain, c.name); serr != nil && err == nil {
			err = serr
		}
	}
	if err != nil {
		return nil, fmt.Errorf("create in %q: %w", c.name, err)
	}
	m.Created = now().UTC()
	m.FreezeMillis = out.FreezeWindow.Milliseconds()
	for _, d := range cp.disks {
		// A frozen view's own transaction held the guest up before Create
		// ran; the longest of them and the hooks' window is the freeze.
		m.FreezeMillis = max(m.FreezeMillis, d.src.HeldStill.Milliseconds())
	}
	m.Warnings = out.Warnings

	// Read what was captured, after the thaw.
	if len(opts.VMConfig) > 0 {
		m.Config, m.ConfigSize = c.repo.chain.HashBlob(opts.VMConfig), int64(len(opts.VMConfig))
		if _, err := w.PutBlob(ctx, chain.DataBlob, m.Config, opts.VMConfig); err != nil {
			return nil, fmt.Errorf("create in %q: VM config: %w", c.name, err)
		}
	}
	if err := cp.scanRest(ctx); err != nil {
		return nil, fmt.Errorf("create in %q: %w", c.name, err)
	}
	for _, d := range cp.disks {
		m.Disks = append(m.Disks, d.result)
	}
	// What was achieved, from what ran and how the disks were captured
	// (disks read as they are were read just now).
	captured := cp.judged()
	achieved, why := consistency.Judge(out, captured)
	m.Consistency = string(achieved)
	m.FallbackReason = strings.Join(nonEmpty(skipped, why), "; ")
	m.CaptureSpreadMillis = captured.Spread.Milliseconds()
	if err := w.SaveManifest(ctx, &m); err != nil {
		return nil, fmt.Errorf("create in %q: %w", c.name, err)
	}
	if opts.RateLimit != nil {
		st.Creates[requested] = append(st.Creates[requested], now().UTC())
		if err := st.save(ctx, c.repo.chain, c.name); err != nil {
			return nil, fmt.Errorf("create in %q: restore point %s is stored, but: %w", c.name, m.ID, err)
		}
	}
	return pointFromManifest(&m), nil
}

// endCreate ends the capture's life (cp.end) and saves the hook log of
// restore point pointID, if the create got that far. A release error is
// logged and joined to err, or, if the restore point was stored, becomes
// the error that says it is stored but cleanup failed.
func (c *Collection) endCreate(ctx context.Context, cp *capture, log *hookLog, pointID string, stored *RestorePoint, err error) error {
	relErr := cp.end(ctx, func(relErr error) {
		// Create has returned: only the hook log and the logger hear of it now.
		if relErr == nil {
			return
		}
		c.repo.chain.Logger().Error("releasing a capture that outlived its create", "collection", c.name, "restore_point", pointID, "error", relErr)
		log.add(releaseRun(fmt.Errorf("after the create had returned: %w", relErr)))
		if pointID != "" {
			c.saveHookLog(ctx, pointID, log, false)
		}
	})
	if relErr != nil {
		log.add(releaseRun(relErr))
	}
	if pointID != "" {
		c.saveHookLog(ctx, pointID, log, err == nil && stored != nil)
	}
	switch {
	case relErr == nil:
		return err
	case err != nil:
		return errors.Join(err, fmt.Errorf("create in %q: %w", c.name, relErr))
	case stored != nil:
		return fmt.Errorf("create in %q: restore point %s is stored, but %w", c.name, stored.ID, relErr)
	default:
		return fmt.Errorf("create in %q: %w", c.name, relErr)
	}
}

// releaseRun is the hook-log entry of a failed release.
func releaseRun(err error) consistency.Run {
	return consistency.Run{Time: time.Now().UTC(), Hook: "capture", Phase: "release", Outcome: "failed", Error: err.Error()}
}

func nonEmpty(s ...string) []string {
	var out []string
	for _, x := range s {
		if x != "" {
			out = append(out, x)
		}
	}
	return out
}

// selectDisks checks the disk names and applies Exclude.
func (c *Collection) selectDisks(opts CreateOptions) ([]DiskSource, []string, error) {
	seen := map[string]bool{}
	for _, d := range opts.Disks {
		if err := chain.CheckName("disk", d.Name); err != nil {
			return nil, nil, fmt.Errorf("create in %q: %w", c.name, err)
		}
		if seen[d.Name] {
			return nil, nil, fmt.Errorf("create in %q: disk %q named twice: %w", c.name, d.Name, ErrInvalidName)
		}
		seen[d.Name] = true
	}
	exclude := map[string]bool{}
	excluded := []string{}
	for _, name := range opts.Exclude {
		if !seen[name] {
			return nil, nil, fmt.Errorf("create in %q: cannot exclude disk %q: no disk of that name: %w", c.name, name, ErrNotFound)
		}
		if !exclude[name] {
			exclude[name] = true
			excluded = append(excluded, name)
		}
	}
	var disks []DiskSource
	for _, d := range opts.Disks {
		if !exclude[d.Name] {
			disks = append(disks, d)
		}
	}
	if len(disks) == 0 {
		return nil, nil, fmt.Errorf("create in %q: no disks to capture", c.name)
	}
	return disks, excluded, nil
}

// parentOf is disk name of restore point rp (the newest that has it), or
// nil if there is none.
func parentOf(rp *RestorePoint, name string) *pointDisk {
	if rp == nil {
		return nil
	}
	d, ok := rp.Disk(name)
	if !ok {
		return nil
	}
	return &pointDisk{point: rp.ID, disk: d.manifest()}
}

// pointDisk is one disk of one restore point.
type pointDisk struct {
	point string
	disk  chain.DiskManifest
}

// newRestorePointID returns an ID that sorts by time and reads well:
// 20261122-013607-3f9a2c.
func newRestorePointID(now time.Time) string {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(errors.Join(errors.New("crypto/rand failed"), err))
	}
	return now.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}
