package qemu

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// BitmapPrefix starts the name of every dirty bitmap a pull-mode backup
// makes. Bitmaps with it that a backup killed midway left behind are
// merged into the previous bitmap and removed by the next backup; other
// bitmaps are only ever merged from, never removed.
const BitmapPrefix = "diskpoint-"

// teardownTimeout bounds the teardown, which runs even when the backup's
// context has ended.
const teardownTimeout = 30 * time.Second

// PullOptions say which disk a pull-mode backup reads, and with which
// bitmaps.
type PullOptions struct {
	// Node is the node name of the disk's format node (the qcow2 node of
	// blockdev-add or qemu-storage-daemon --blockdev ...,node-name=NODE).
	Node string
	// Previous is the bitmap the previous backup started (its NextBitmap),
	// whose dirty extents are the writes since; "" for a first backup.
	Previous string
	// Next is the bitmap to start at this backup's instant, named with
	// BitmapPrefix; each backup must start a new name (diskpoint-POINTID),
	// so that a bitmap deleted and recreated under one name is never
	// mistaken for the one a restore point recorded.
	Next string
	// NBDSocket is the Unix socket of the daemon's NBD server
	// (qemu-storage-daemon --nbd-server addr.type=unix,addr.path=PATH, or
	// QMP nbd-server-start), on which the frozen view is exported.
	NBDSocket string
	// FleeceDir holds the temporary qcow2 that keeps the old contents of
	// blocks the guest overwrites during the backup; "" means os.TempDir().
	// The daemon must be able to open it.
	FleeceDir string
	// Hold, if set, runs around the transaction: it holds the guest still
	// (a guest agent's fsfreeze, pre and post scripts) and returns the
	// function that lets it go on. The freeze lasts only for the transaction.
	Hold func(ctx context.Context) (release func(), err error)
}

// PullExport is the frozen view of a disk a pull-mode backup exports.
type PullExport struct {
	// URI is the NBD export of the view (nbd+unix:///NAME?socket=PATH).
	URI string
	// Bitmap is the previous bitmap, exported with the view
	// (qemu:dirty-bitmap:NAME): the writes since the previous backup. ""
	// for a first backup.
	Bitmap string
	// NextBitmap started at the view's instant: the next backup reads it.
	NextBitmap string
	// FreezeWindow is how long the transaction took: the only time the
	// guest's writes were held up.
	FreezeWindow time.Duration
	// FrozenAt is when the transaction was sent: the view holds every
	// write acknowledged before it and none sent after FrozenAt+FreezeWindow.
	FrozenAt time.Time
	// Recovered says a backup that died midway was cleaned up first, its
	// bitmaps merged into Previous.
	Recovered bool
}

// Pull is a pull-mode backup in progress: the fleecing node, the
// copy-before-write filter and the export exist until Finish.
type Pull struct {
	c      *Client
	opts   PullOptions
	names  pullNames
	export PullExport
}

// pullNames are the names of what a backup of one node adds to the
// daemon. They are the same for every backup of the node, so that one
// left by a killed backup is found and removed; node names are at most 31
// characters in QEMU.
type pullNames struct {
	fleece, cbw, access, job, export, file string
}

func namesFor(node, dir string) pullNames {
	sum := sha256.Sum256([]byte(node))
	h := hex.EncodeToString(sum[:6])
	return pullNames{
		fleece: "dp-fleece-" + h, cbw: "dp-cbw-" + h, access: "dp-access-" + h,
		job: "dp-job-" + h, export: "dp-export-" + h,
		file: filepath.Join(dir, "diskpoint-fleece-"+h+".qcow2"),
	}
}

// PullBackup backs up the disk opts names while the guest runs: StartPull,
// then read (which reads the export, with snapshot's NBD disk source for
// one), then Finish with read's outcome.
func PullBackup(ctx context.Context, c *Client, opts PullOptions, read func(context.Context, PullExport) error) (PullExport, error) {
	p, err := StartPull(ctx, c, opts)
	if err != nil {
		return PullExport{}, err
	}
	err = read(ctx, p.Export())
	return p.Export(), errors.Join(err, p.Finish(ctx, err == nil))
}

// StartPull takes the disk's frozen view: it adds a qcow2 fleecing node,
// runs one transaction that disables the previous bitmap, adds the next
// (persistent) and inserts a copy-before-write filter writing to the
// fleecing node (blockdev-backup sync=none), and exports a snapshot-access
// node of the filter over NBD with the previous bitmap. What a backup
// killed midway left on the node is cleaned up first, its changes merged
// into the previous bitmap. Whatever StartPull returns, nothing is lost:
// on error it has undone what it did.
func StartPull(ctx context.Context, c *Client, opts PullOptions) (*Pull, error) {
	switch {
	case opts.Node == "" || opts.NBDSocket == "":
		return nil, errors.New("pull-mode backup: a Node and an NBDSocket are needed")
	case !strings.HasPrefix(opts.Next, BitmapPrefix) || opts.Next == opts.Previous:
		return nil, fmt.Errorf("pull-mode backup of %q: the next bitmap %q must be new and start with %q", opts.Node, opts.Next, BitmapPrefix)
	}
	dir := opts.FleeceDir
	if dir == "" {
		dir = os.TempDir()
	}
	p := &Pull{c: c, opts: opts, names: namesFor(opts.Node, dir)}
	p.export.Bitmap, p.export.NextBitmap = opts.Previous, opts.Next
	fail := func(err error) (*Pull, error) {
		err = fmt.Errorf("pull-mode backup of %q: %w", opts.Node, err)
		return nil, errors.Join(err, p.Finish(ctx, false))
	}

	node, err := c.blockNode(ctx, opts.Node)
	if err != nil {
		return nil, fmt.Errorf("pull-mode backup: %w", err)
	}
	recovered, err := p.recover(ctx, node)
	if err != nil {
		return nil, fmt.Errorf("pull-mode backup of %q: cleaning up after an earlier backup: %w", opts.Node, err)
	}
	p.export.Recovered = recovered
	if opts.Previous != "" && node.bitmap(opts.Previous) == nil {
		return nil, fmt.Errorf("pull-mode backup of %q: %w: %q", opts.Node, ErrNoBitmap, opts.Previous)
	}

	// The fleecing image only ever holds blocks the guest overwrote
	// during the backup; it has the disk's size, as blockdev-backup wants.
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", p.names.file, fmt.Sprint(node.Image.VirtualSize)).CombinedOutput(); err != nil {
		return fail(fmt.Errorf("qemu-img create %s: %w: %s", p.names.file, err, strings.TrimSpace(string(out))))
	}
	if err := c.Execute(ctx, "blockdev-add", map[string]any{
		"driver": "qcow2", "node-name": p.names.fleece,
		"file": map[string]any{"driver": "file", "filename": p.names.file},
	}, nil); err != nil {
		return fail(err)
	}

	var actions []map[string]any
	if opts.Previous != "" {
		actions = append(actions, map[string]any{"type": "block-dirty-bitmap-disable", "data": map[string]any{"node": opts.Node, "name": opts.Previous}})
	}
	actions = append(actions,
		map[string]any{"type": "block-dirty-bitmap-add", "data": map[string]any{"node": opts.Node, "name": opts.Next, "persistent": true}},
		map[string]any{"type": "blockdev-backup", "data": map[string]any{
			"job-id": p.names.job, "device": opts.Node, "target": p.names.fleece,
			"sync": "none", "filter-node-name": p.names.cbw, "auto-finalize": true, "auto-dismiss": true,
		}})
	release := func() {}
	if opts.Hold != nil {
		if release, err = opts.Hold(ctx); err != nil {
			return fail(fmt.Errorf("holding the guest still: %w", err))
		}
	}
	p.export.FrozenAt = time.Now()
	err = c.Execute(ctx, "transaction", map[string]any{"actions": actions}, nil)
	p.export.FreezeWindow = time.Since(p.export.FrozenAt)
	release() // the view is taken: the guest goes on at once
	if err != nil {
		return fail(err)
	}

	if err := c.Execute(ctx, "blockdev-add", map[string]any{
		"driver": "snapshot-access", "node-name": p.names.access, "file": p.names.cbw,
	}, nil); err != nil {
		return fail(err)
	}
	export := map[string]any{
		"type": "nbd", "id": p.names.export, "node-name": p.names.access,
		"name": p.names.export, "writable": false,
	}
	if opts.Previous != "" {
		export["bitmaps"] = []map[string]any{{"node": opts.Node, "name": opts.Previous}}
	}
	if err := c.Execute(ctx, "block-export-add", export, nil); err != nil {
		return fail(err)
	}
	p.export.URI = (&url.URL{Scheme: "nbd+unix", Path: "/" + p.names.export, RawQuery: "socket=" + url.QueryEscape(opts.NBDSocket)}).String()
	return p, nil
}

// ErrNoBitmap is returned when the previous bitmap a backup should read
// is not on the node (removed, or lost with a daemon that did not keep
// it): the caller backs up without it, and every block is compared.
var ErrNoBitmap = errors.New("the previous dirty bitmap is not on the node")

// Export returns the view StartPull exported.
func (p *Pull) Export() PullExport { return p.export }

// Finish tears the backup down: the export, the snapshot-access node, the
// copy-before-write filter (cancelling its job) and the fleecing node. When
// ok, the next bitmap is kept and the previous removed; otherwise the next
// is merged into the previous, which records writes again, and removed, so
// that the next backup reads every change since the previous one. It runs
// even when ctx has ended.
func (p *Pull) Finish(ctx context.Context, ok bool) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), teardownTimeout)
	defer cancel()
	err := p.teardown(ctx)
	node, qerr := p.c.blockNode(ctx, p.opts.Node)
	if qerr != nil {
		return errors.Join(err, qerr)
	}
	if ok && err == nil {
		if p.opts.Previous != "" && node.bitmap(p.opts.Previous) != nil {
			err = p.c.Execute(ctx, "block-dirty-bitmap-remove", map[string]any{"node": p.opts.Node, "name": p.opts.Previous}, nil)
		}
	} else {
		err = errors.Join(err, p.mergeBack(ctx, node, []string{p.opts.Next}))
	}
	if err != nil {
		return fmt.Errorf("pull-mode backup of %q: teardown: %w", p.opts.Node, err)
	}
	return nil
}

// teardown removes what StartPull added, in the reverse order, each only
// if it is there.
func (p *Pull) teardown(ctx context.Context) error {
	var errs []error
	exports, err := p.c.exportIDs(ctx)
	if err != nil {
		return err
	}
	if exports[p.names.export] {
		errs = append(errs, p.c.Execute(ctx, "block-export-del", map[string]any{"id": p.names.export, "mode": "hard"}, nil))
		errs = append(errs, p.c.waitGone(ctx, p.names.export, p.c.exportIDs))
	}
	nodes, err := p.c.nodeNames(ctx)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	if nodes[p.names.access] {
		errs = append(errs, p.c.Execute(ctx, "blockdev-del", map[string]any{"node-name": p.names.access}, nil))
	}
	jobs, err := p.c.jobIDs(ctx)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	if jobs[p.names.job] {
		// Cancelling the job removes the copy-before-write filter.
		errs = append(errs, p.c.Execute(ctx, "block-job-cancel", map[string]any{"device": p.names.job, "force": true}, nil))
		errs = append(errs, p.c.waitGone(ctx, p.names.job, p.c.jobIDs))
	}
	if nodes[p.names.fleece] {
		errs = append(errs, p.c.Execute(ctx, "blockdev-del", map[string]any{"node-name": p.names.fleece}, nil))
	}
	if err := os.Remove(p.names.file); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// recover cleans up after a backup of the node that was killed midway: it
// removes what that backup added and merges the bitmaps it started into
// the previous one. It says whether there was anything to recover.
func (p *Pull) recover(ctx context.Context, node *blockNode) (bool, error) {
	var leftover []string
	for _, b := range node.DirtyBitmaps {
		if strings.HasPrefix(b.Name, BitmapPrefix) && b.Name != p.opts.Previous {
			leftover = append(leftover, b.Name)
		}
	}
	prev := node.bitmap(p.opts.Previous)
	stale := len(leftover) > 0 || (prev != nil && !prev.Recording)
	if !stale {
		exports, err := p.c.exportIDs(ctx)
		if err != nil {
			return false, err
		}
		jobs, err := p.c.jobIDs(ctx)
		if err != nil {
			return false, err
		}
		stale = exports[p.names.export] || jobs[p.names.job]
	}
	if !stale {
		return false, nil
	}
	if err := p.teardown(ctx); err != nil {
		return true, err
	}
	return true, p.mergeBack(ctx, node, leftover)
}

// mergeBack merges bitmaps into the previous one (which records again) and
// removes them: their dirty blocks are read by the next backup. Without a
// previous bitmap, they are only removed: the next backup reads everything.
func (p *Pull) mergeBack(ctx context.Context, node *blockNode, bitmaps []string) error {
	var present []string
	for _, b := range bitmaps {
		if node.bitmap(b) != nil {
			present = append(present, b)
		}
	}
	prev := node.bitmap(p.opts.Previous)
	if prev != nil {
		// In one transaction, and the previous bitmap recording before
		// the merge: a write between the two would otherwise be in
		// neither once the others are removed.
		var actions []map[string]any
		if !prev.Recording {
			actions = append(actions, map[string]any{"type": "block-dirty-bitmap-enable", "data": map[string]any{"node": p.opts.Node, "name": p.opts.Previous}})
		}
		if len(present) > 0 {
			actions = append(actions, map[string]any{"type": "block-dirty-bitmap-merge", "data": map[string]any{"node": p.opts.Node, "target": p.opts.Previous, "bitmaps": present}})
		}
		if len(actions) > 0 {
			if err := p.c.Execute(ctx, "transaction", map[string]any{"actions": actions}, nil); err != nil {
				return err
			}
		}
	}
	for _, b := range present {
		if err := p.c.Execute(ctx, "block-dirty-bitmap-remove", map[string]any{"node": p.opts.Node, "name": b}, nil); err != nil {
			return err
		}
	}
	return nil
}
