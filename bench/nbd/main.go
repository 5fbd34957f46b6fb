// Command nbd measures issue 14's targets for backing up live VM disks over
// NBD, in one run, with the diskpoint CLI, on the mixed image of
// bench/compare (30% holes, 30% text, 25% random, 15% repeated runs;
// seed 1) converted to qcow2 with qemu-img convert:
//
//		go run ./bench/nbd -size 4GiB -runs 3 -out bench/RESULTS.md
//
//	 1. Full backup over NBD: `create d=nbd+unix:///?socket=S` from
//	    `qemu-nbd -r -t -f qcow2` against the NBD read floor (`nbdcopy
//	    nbd+unix:///?socket=S null:`) plus the local first backup of the
//	    same bytes (`create d=RAW` of the raw image). Target: at most 1.3×
//	    (floor + local).
//	 2. Bitmap incremental after a 1% change: a persistent dirty bitmap is
//	    added to the qcow2 with `qemu-img bitmap --add` before the full
//	    backup (which is taken with -bitmap, so its restore point records
//	    the bitmap and the next one may trust it); the change (scattered
//	    4-64 KiB writes, seed 2, as demodisk.Scatter makes them) is then
//	    written into the qcow2 with qemu-io, so the bitmap tracks exactly
//	    it. `create -bitmap d=NAME` is timed against the hashing incremental
//	    of the same disk over NBD (no -bitmap) from a copy of the same
//	    repository. Target: at most 10%. A third copy of the repository
//	    takes the bitmap incremental again through a proxy on a Unix socket
//	    that counts the bytes the server sends (data, reply headers and
//	    block status: an upper bound on the bytes read), against the dirty
//	    extents the bitmap reports through package nbd. Target: at most 1.1×.
//	 3. Freeze window of a pull-mode restore point: `create -qmp` against a
//	    qemu-storage-daemon serving the changed qcow2, one restore point
//	    per run (the first full, the others incremental), its freeze_ms
//	    (the transaction only). Target: under 100 ms, median and max.
//
// Before each timed step dirty pages are written back and the image and
// repository read into the page cache. The table shows medians over -runs;
// every run's figures follow it. The working directory (under /var/tmp)
// is removed afterwards.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diskpoint/diskpoint/blockdiff"
	"github.com/diskpoint/diskpoint/internal/benchutil"
	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/nbd"
	"github.com/dustin/go-humanize"
)

const bitmap = "b0"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "nbd:", err)
		os.Exit(1)
	}
}

// figures are one run's measurements.
type figures struct {
	floor, local, full     time.Duration
	bitmapIncr, hashIncr   time.Duration
	emptyIncr              time.Duration // a bitmap incremental with nothing changed
	dirty, sent            int64         // bitmap's dirty bytes; bytes the server sent to the counted incremental
	bitmapChanged, hashChg int64         // changed_bytes of the two incrementals
	freeze                 int64         // freeze_ms of the pull-mode restore point
}

type bench struct {
	dir, cli, before, after, base string
	ranges                        []blockdiff.Range
	patches                       []string // qemu-io commands writing the change
}

func run() error {
	sizeFlag := flag.String("size", "4GiB", "image size")
	runs := flag.Int("runs", 3, "run every step this many times; the table shows medians")
	out := flag.String("out", "", "also write the table into `FILE` between <!-- nbd:begin --> and <!-- nbd:end -->")
	flag.Parse()
	size, err := humanize.ParseBytes(*sizeFlag)
	if err != nil {
		return err
	}
	if *runs < 1 {
		return errors.New("-runs must be 1 or more")
	}
	for _, tool := range []string{"qemu-nbd", "qemu-img", "qemu-io", "qemu-storage-daemon", "nbdcopy"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is needed: %w", tool, err)
		}
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp("/var/tmp", "diskpoint-nbdbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b, err := setUp(ctx, dir, int64(size))
	if err != nil {
		return err
	}

	// The freeze window's daemon serves its own copy of the changed disk
	// for all runs: one pull-mode restore point per run.
	daemon, err := startDaemon(ctx, b)
	if err != nil {
		return err
	}
	defer daemon.stop()
	var all []figures
	for r := 1; r <= *runs; r++ {
		fmt.Fprintf(os.Stderr, "--- run %d of %d\n", r, *runs)
		f, err := b.oneRun(ctx, r == 1)
		if err != nil {
			return err
		}
		if f.freeze, err = daemon.restorePoint(ctx, b); err != nil {
			return err
		}
		all = append(all, f)
	}
	var written int64
	for _, rg := range b.ranges {
		written += rg.Length
	}
	table := report(all, int64(size), written, len(b.ranges), *runs)
	fmt.Print(table)
	if *out != "" {
		return benchutil.ReplaceBetweenMarkers(*out, "nbd", "Live VMs over NBD: issue 14's targets", table)
	}
	return nil
}

// setUp builds the CLI, the raw image before and after the change, the
// qcow2 of the image before, and the qemu-io commands that write the change.
func setUp(ctx context.Context, dir string, size int64) (*bench, error) {
	b := &bench{dir: dir, cli: filepath.Join(dir, "diskpoint"), before: filepath.Join(dir, "before.raw"),
		after: filepath.Join(dir, "after.raw"), base: filepath.Join(dir, "base.qcow2")}
	if err := sh(ctx, "go", "build", "-o", b.cli, "./examples/diskpoint"); err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "generating a %s mixed image in %s\n", humanize.IBytes(uint64(size)), dir)
	if err := demodisk.Create(b.before, size, 1, demodisk.MixedImage); err != nil {
		return nil, err
	}
	if err := sh(ctx, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", b.before, b.base); err != nil {
		return nil, err
	}
	if err := sh(ctx, "cp", "--sparse=always", b.before, b.after); err != nil {
		return nil, err
	}
	var err error
	if b.ranges, err = demodisk.Scatter(b.after, 0.01, 2); err != nil {
		return nil, err
	}
	// qemu-io's write -s fills its buffer from the start of a file: one
	// file per write, holding the bytes Scatter wrote there.
	after, err := os.Open(b.after)
	if err != nil {
		return nil, err
	}
	defer after.Close()
	patches := filepath.Join(dir, "patches")
	if err := os.Mkdir(patches, 0o700); err != nil {
		return nil, err
	}
	for i, rg := range b.ranges {
		buf := make([]byte, rg.Length)
		if _, err := after.ReadAt(buf, rg.Offset); err != nil {
			return nil, err
		}
		name := filepath.Join(patches, fmt.Sprint(i))
		if err := os.WriteFile(name, buf, 0o600); err != nil {
			return nil, err
		}
		b.patches = append(b.patches, "-c", fmt.Sprintf("write -q -s %s %d %d", name, rg.Offset, rg.Length))
	}
	return b, nil
}

// oneRun measures targets 1 and 2 on a new copy of the qcow2.
func (b *bench) oneRun(ctx context.Context, check bool) (f figures, err error) {
	disk := filepath.Join(b.dir, "disk.qcow2")
	if err := sh(ctx, "cp", "--sparse=always", b.base, disk); err != nil {
		return f, err
	}
	defer os.Remove(disk)
	if err := sh(ctx, "qemu-img", "bitmap", "--add", disk, bitmap); err != nil {
		return f, err
	}
	socket := filepath.Join(b.dir, "nbd.sock")
	uri := "nbd+unix:///?socket=" + socket
	server, err := startQemuNBD(ctx, disk, socket)
	if err != nil {
		return f, err
	}
	defer func() { server.stop() }()

	// 1. The read floor, the local first backup, the full backup over NBD.
	if f.floor, err = b.timed(ctx, disk, "", "nbdcopy", uri, "null:"); err != nil {
		return f, err
	}
	repoL := filepath.Join(b.dir, "repo-local")
	if f.local, err = b.create(ctx, b.before, repoL, "d="+b.before); err != nil {
		return f, err
	}
	os.RemoveAll(repoL)
	repoN := filepath.Join(b.dir, "repo-nbd")
	defer os.RemoveAll(repoN)
	if f.full, err = b.create(ctx, disk, repoN, "-bitmap", "d="+bitmap, "d="+uri); err != nil {
		return f, err
	}

	// What an incremental costs when nothing changed: the bitmap is still
	// empty. Taken into a copy, so the parent of those below is the full.
	repoE := filepath.Join(b.dir, "repo-empty")
	defer os.RemoveAll(repoE)
	if err := sh(ctx, "cp", "-a", repoN, repoE); err != nil {
		return f, err
	}
	if f.emptyIncr, err = b.create(ctx, disk, repoE, "-bitmap", "d="+bitmap, "d="+uri); err != nil {
		return f, err
	}
	os.RemoveAll(repoE)

	// 2. The change, written through QEMU so the bitmap records it.
	server.stop()
	if err := sh(ctx, "qemu-io", append([]string{"-f", "qcow2", disk}, b.patches...)...); err != nil {
		return f, err
	}
	if check {
		if err := sh(ctx, "qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw", disk, b.after); err != nil {
			return f, fmt.Errorf("the changed qcow2 is not the changed raw image: %w", err)
		}
	}
	if server, err = startQemuNBD(ctx, disk, socket); err != nil {
		return f, err
	}
	if f.dirty, err = dirtyBytes(ctx, uri); err != nil {
		return f, err
	}
	repoH, repoC := filepath.Join(b.dir, "repo-hash"), filepath.Join(b.dir, "repo-count")
	defer os.RemoveAll(repoH)
	defer os.RemoveAll(repoC)
	for _, copyTo := range []string{repoH, repoC} {
		if err := sh(ctx, "cp", "-a", repoN, copyTo); err != nil {
			return f, err
		}
	}
	rp, wall, err := b.createJSON(ctx, disk, repoN, "-bitmap", "d="+bitmap, "d="+uri)
	if err != nil {
		return f, err
	}
	if rp.Disks[0].ChangeSource != "bitmap" {
		return f, fmt.Errorf("the bitmap incremental did not trust the bitmap: %s %s", rp.Disks[0].ChangeSource, rp.Disks[0].ChangeReason)
	}
	f.bitmapIncr, f.bitmapChanged = wall, rp.Disks[0].ChangedBytes
	if rp, f.hashIncr, err = b.createJSON(ctx, disk, repoH, "d="+uri); err != nil {
		return f, err
	}
	f.hashChg = rp.Disks[0].ChangedBytes

	proxySocket := filepath.Join(b.dir, "count.sock")
	var sent atomic.Int64
	stopProxy, err := startProxy(proxySocket, socket, &sent)
	if err != nil {
		return f, err
	}
	defer stopProxy()
	if _, err := b.create(ctx, disk, repoC, "-bitmap", "d="+bitmap, "d=nbd+unix:///?socket="+proxySocket); err != nil {
		return f, err
	}
	f.sent = sent.Load()
	return f, nil
}

// createResult is what the figures need of `create -json`.
type createResult struct {
	FreezeMillis int64 `json:"freeze_ms"`
	Disks        []struct {
		ChangedBytes int64  `json:"changed_bytes"`
		ChangeSource string `json:"change_source"`
		ChangeReason string `json:"change_reason"`
	} `json:"disks"`
}

// create initialises repo if it is new and times a create into it.
func (b *bench) create(ctx context.Context, image, repo string, args ...string) (time.Duration, error) {
	_, wall, err := b.createJSON(ctx, image, repo, args...)
	return wall, err
}

func (b *bench) createJSON(ctx context.Context, image, repo string, args ...string) (createResult, time.Duration, error) {
	var rp createResult
	if _, err := os.Stat(repo); errors.Is(err, os.ErrNotExist) {
		if err := sh(ctx, b.cli, "init", "-repo", repo); err != nil {
			return rp, 0, err
		}
	}
	benchutil.Warm(image, repo)
	cmd := exec.CommandContext(ctx, b.cli, append([]string{"create", "-json", "-repo", repo, "-collection", "vm"}, args...)...)
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return rp, 0, fmt.Errorf("diskpoint create %s: %w", strings.Join(args, " "), err)
	}
	wall := time.Since(start)
	if err := json.Unmarshal(stdout.Bytes(), &rp); err != nil || len(rp.Disks) != 1 {
		return rp, 0, fmt.Errorf("diskpoint create %s: its JSON: %v: %s", strings.Join(args, " "), err, stdout.Bytes())
	}
	return rp, wall, nil
}

// timed warms image and repo (if any) and times a command.
func (b *bench) timed(ctx context.Context, image, repo, name string, args ...string) (time.Duration, error) {
	benchutil.Warm(image, repo)
	start := time.Now()
	err := sh(ctx, name, args...)
	return time.Since(start), err
}

// dirtyBytes sums the extents the bitmap marks dirty, as the NBD server
// reports them.
func dirtyBytes(ctx context.Context, uri string) (int64, error) {
	c, err := nbd.Dial(ctx, uri, nbd.ClientOptions{MetaContexts: []string{nbd.DirtyBitmap(bitmap)}, Connections: 1})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	extents, err := c.BlockStatus(ctx, nbd.DirtyBitmap(bitmap), 0, c.Size())
	if err != nil {
		return 0, err
	}
	var n int64
	for _, e := range extents {
		if e.Flags&nbd.StateDirty != 0 {
			n += e.Length
		}
	}
	return n, nil
}

// process is a server this program started.
type process struct {
	cmd  *exec.Cmd
	once sync.Once
}

func (p *process) stop() {
	p.once.Do(func() {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	})
}

// startQemuNBD serves disk read-only on socket, with the bitmap exported,
// and returns once the socket accepts connections.
func startQemuNBD(ctx context.Context, disk, socket string) (*process, error) {
	os.Remove(socket)
	cmd := exec.CommandContext(ctx, "qemu-nbd", "-r", "-t", "-e", "8", "-f", "qcow2", "-B", bitmap, "--socket", socket, disk)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("qemu-nbd: %w", err)
	}
	p := &process{cmd: cmd}
	if err := waitListening(socket); err != nil {
		p.stop()
		return nil, fmt.Errorf("qemu-nbd on %s: %w", socket, err)
	}
	return p, nil
}

// waitListening polls until socket accepts a connection: neither
// qemu-nbd nor qemu-storage-daemon says when it listens otherwise.
func waitListening(socket string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("unix", socket)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// daemon is a qemu-storage-daemon serving a copy of the changed disk as
// node disk0, with QMP and an NBD server for pull-mode backups.
type daemon struct {
	*process
	qmp, nbd, repo string
}

func startDaemon(ctx context.Context, b *bench) (*daemon, error) {
	image := filepath.Join(b.dir, "live.qcow2")
	if err := sh(ctx, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", b.after, image); err != nil {
		return nil, err
	}
	d := &daemon{qmp: filepath.Join(b.dir, "qmp.sock"), nbd: filepath.Join(b.dir, "live.sock"), repo: filepath.Join(b.dir, "repo-live")}
	cmd := exec.CommandContext(ctx, "qemu-storage-daemon",
		"--blockdev", "driver=file,node-name=file0,filename="+image,
		"--blockdev", "driver=qcow2,node-name=disk0,file=file0",
		"--nbd-server", "addr.type=unix,addr.path="+d.nbd,
		"--chardev", "socket,id=qmp0,path="+d.qmp+",server=on,wait=off",
		"--monitor", "chardev=qmp0")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("qemu-storage-daemon: %w", err)
	}
	d.process = &process{cmd: cmd}
	if err := waitListening(d.nbd); err != nil {
		d.stop()
		return nil, fmt.Errorf("qemu-storage-daemon: %w", err)
	}
	return d, nil
}

// restorePoint takes one pull-mode restore point and returns its freeze_ms.
func (d *daemon) restorePoint(ctx context.Context, b *bench) (int64, error) {
	rp, _, err := b.createJSON(ctx, "", d.repo, "-qmp", d.qmp, "-qmp-nbd", d.nbd, "d=disk0")
	return rp.FreezeMillis, err
}

// startProxy forwards connections on listen to target and counts the
// bytes target sends back.
func startProxy(listen, target string, sent *atomic.Int64) (func(), error) {
	os.Remove(listen)
	l, err := net.Listen("unix", listen)
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			client, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer client.Close()
				server, err := net.Dial("unix", target)
				if err != nil {
					return
				}
				defer server.Close()
				go func() { io.Copy(server, client); server.Close() }()
				n, _ := io.Copy(client, server)
				sent.Add(n)
			}()
		}
	}()
	return func() { l.Close() }, nil
}

// report is the Markdown table of the medians and every run's figures;
// written and writes are the change's bytes and writes.
func report(all []figures, size, written int64, writes, runs int) string {
	pick := func(get func(figures) time.Duration) time.Duration {
		var v []time.Duration
		for _, f := range all {
			v = append(v, get(f))
		}
		return benchutil.Median(v)
	}
	pickN := func(get func(figures) int64) (int64, int64) {
		var v []int64
		for _, f := range all {
			v = append(v, get(f))
		}
		return benchutil.Median(v), slices.Max(v)
	}
	floor, local, full := pick(func(f figures) time.Duration { return f.floor }), pick(func(f figures) time.Duration { return f.local }), pick(func(f figures) time.Duration { return f.full })
	bitmapIncr, hashIncr := pick(func(f figures) time.Duration { return f.bitmapIncr }), pick(func(f figures) time.Duration { return f.hashIncr })
	dirty, _ := pickN(func(f figures) int64 { return f.dirty })
	sent, _ := pickN(func(f figures) int64 { return f.sent })
	freeze, freezeMax := pickN(func(f figures) int64 { return f.freeze })
	fullRatio := full.Seconds() / (floor + local).Seconds()
	incrShare := bitmapIncr.Seconds() / hashIncr.Seconds()
	readRatio := float64(sent) / float64(dirty)

	var s strings.Builder
	fmt.Fprintf(&s, "%s mixed image as qcow2, medians of %d runs.\n\n", humanize.IBytes(uint64(size)), runs)
	fmt.Fprintf(&s, "| step | time | target | met |\n| --- | --- | --- | --- |\n")
	fmt.Fprintf(&s, "| 1. full backup over NBD | %s = %.2fx (nbdcopy floor %s + local first backup %s) | at most 1.3x | %s |\n",
		benchutil.Secs(full), fullRatio, benchutil.Secs(floor), benchutil.Secs(local), benchutil.Yes(fullRatio <= 1.3))
	fmt.Fprintf(&s, "| 2a. bitmap incremental after 1%% change | %s = %.1f%% of the hashing incremental's %s | at most 10%% | %s |\n",
		benchutil.Secs(bitmapIncr), 100*incrShare, benchutil.Secs(hashIncr), benchutil.Yes(incrShare <= 0.10))
	fmt.Fprintf(&s, "| 2b. bytes the server sent to it | %s = %.3fx the bitmap's dirty extents (%s) | at most 1.1x | %s |\n",
		humanize.IBytes(uint64(sent)), readRatio, humanize.IBytes(uint64(dirty)), benchutil.Yes(readRatio <= 1.1))
	fmt.Fprintf(&s, "| 3. freeze window of a pull-mode restore point | median %d ms, max %d ms | under 100 ms | %s |\n",
		freeze, freezeMax, benchutil.Yes(freezeMax < 100))
	fmt.Fprintf(&s, "\nThe change wrote %s in %d writes of 4-64 KiB (some may overlap); the bitmap (64 KiB granularity) marks %s dirty, and both incrementals found %s changed.\n",
		humanize.IBytes(uint64(written)), writes, humanize.IBytes(uint64(dirty)), humanize.IBytes(uint64(all[len(all)/2].bitmapChanged)))
	fmt.Fprintf(&s, "A bitmap incremental with nothing changed (the bitmap still empty) takes %s.\n",
		benchutil.Secs(pick(func(f figures) time.Duration { return f.emptyIncr })))
	fmt.Fprintf(&s, "\nEvery run (times in seconds):\n\n")
	for i, f := range all {
		fmt.Fprintf(&s, "- run %d: nbdcopy %.2f, local first backup %.2f, full over NBD %.2f; empty bitmap incremental %.2f, bitmap incremental %.2f (changed %s), hashing incremental %.2f (changed %s); dirty %d bytes, sent %d bytes; freeze %d ms\n",
			i+1, f.floor.Seconds(), f.local.Seconds(), f.full.Seconds(), f.emptyIncr.Seconds(), f.bitmapIncr.Seconds(), humanize.IBytes(uint64(f.bitmapChanged)),
			f.hashIncr.Seconds(), humanize.IBytes(uint64(f.hashChg)), f.dirty, f.sent, f.freeze)
	}
	return s.String()
}

// sh runs a command, its output to stderr.
func sh(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w", name, strings.Join(args[:min(len(args), 6)], " "), err)
	}
	return nil
}
