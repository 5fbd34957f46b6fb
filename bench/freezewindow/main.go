// Command freezewindow measures how long diskpoint's CLI holds file systems
// frozen when it must read their disks inside the freeze window: two ext4
// file systems in image files (2.5 GiB in all, filled with files of the
// mixed image's content) on a file system without reflinks, mounted through
// loop devices, with a writer process writing and fsyncing into both, and
// restore points taken in filesystem mode with -freeze on both mount points.
// It must run as root, with mkfs.ext4, losetup, mount and fsfreeze.
//
//	go run ./bench/freezewindow -cli before=/tmp/dp-before -cli after=/tmp/dp-after -runs 5
//
// Each -cli NAME=BINARY is a diskpoint CLI. In every run each CLI, in
// turns (so that they see the same writer and the same machine), takes a
// first (full) restore point into a new repository and then an incremental
// one, -interval after the first began; before each create, dirty pages are
// written back, the images read into the page cache, and memory touched and
// freed (see warm). For each create it records the restore point's
// freeze_ms, the create's wall time and the writer's longest stall (one
// write and its fdatasync) while the create ran, and it prints a Markdown
// table of the medians. The file systems are 1.5 and 1.0 GiB, each about
// 60% full of 128 MiB files of the mixed image's content (30% holes, 30%
// text, 25% random data, 15% repeated runs); the writer rewrites 4-64 KiB
// at random places of a 64 MiB file on each, with fdatasync, about 200
// times a second. Loop devices, mounts and files are removed afterwards,
// also after a failure or Ctrl-C.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/diskpoint/diskpoint/blockdiff"
	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/dustin/go-humanize"
)

// writerEnv makes this program the writer: it writes into the mount points
// the variable lists (comma-separated) until killed.
const writerEnv = "FREEZEWINDOW_WRITER"

// stallReport is the writer's threshold: a write (with its fdatasync) that
// takes longer is reported.
const stallReport = 20 * time.Millisecond

// fileSystem is one ext4 file system in an image file on a loop device.
type fileSystem struct {
	name  string // the disk's name in the restore point
	image string
	size  int64
	dev   string // the loop device, once attached
	mnt   string // where it is mounted, once mounted
}

// cli is one diskpoint binary under test, with its own repository.
type cli struct {
	name, path, repo string
}

// createResult is one create by one CLI.
type createResult struct {
	start, end          time.Time
	freeze, wall, stall time.Duration
	changed, stored     int64
	consistency         string
	captures            []string
}

func main() {
	if n := os.Getenv(touchEnv); n != "" {
		size, err := strconv.ParseInt(n, 10, 64)
		if err != nil {
			os.Exit(1)
		}
		touch(size)
		return
	}
	if mounts := os.Getenv(writerEnv); mounts != "" {
		if err := write(strings.Split(mounts, ",")); err != nil {
			fmt.Fprintln(os.Stderr, "writer:", err)
			os.Exit(1)
		}
		return
	}
	var clis listFlag
	flag.Var(&clis, "cli", "`NAME=BINARY`: a diskpoint CLI to measure (repeatable)")
	runs := flag.Int("runs", 5, "runs: in each, every CLI takes a first and an incremental restore point")
	interval := flag.Duration("interval", 20*time.Second, "time from the start of a first restore point to that of the incremental one")
	work := flag.String("work", "/var/tmp", "directory for the images and repositories, on a file system without reflinks")
	flag.Parse()
	if len(clis) == 0 || *runs < 1 {
		fmt.Fprintln(os.Stderr, "freezewindow: give -cli NAME=BINARY at least once, and -runs 1 or more")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, clis, *runs, *interval, *work); err != nil {
		fmt.Fprintln(os.Stderr, "freezewindow:", err)
		os.Exit(1)
	}
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func run(ctx context.Context, specs []string, runs int, interval time.Duration, workParent string) (err error) {
	work, err := os.MkdirTemp(workParent, "diskpoint-freezewindow-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if err := checkNoReflinks(ctx, work); err != nil {
		return err
	}
	var clis []*cli
	for _, s := range specs {
		name, path, ok := strings.Cut(s, "=")
		if !ok {
			return fmt.Errorf("-cli %q: want NAME=BINARY", s)
		}
		clis = append(clis, &cli{name: name, path: path, repo: filepath.Join(work, "repo-"+name)})
	}

	fss := []*fileSystem{
		{name: "os", image: filepath.Join(work, "os.img"), size: 1536 << 20},
		{name: "data", image: filepath.Join(work, "data.img"), size: 1024 << 20},
	}
	defer func() { err = errors.Join(err, teardown(fss)) }()
	for i, fs := range fss {
		if err := setUp(ctx, fs, work, uint64(i+1)); err != nil {
			return err
		}
	}

	writer, stalls, err := startWriter(ctx, fss)
	if err != nil {
		return err
	}
	defer writer.stop()

	results := map[string]*[2][]createResult{} // first and incremental restore points
	for r := range runs {
		for k := range clis {
			c := clis[(r+k)%len(clis)] // take turns at going first
			if results[c.name] == nil {
				results[c.name] = new([2][]createResult)
			}
			if err := os.RemoveAll(c.repo); err != nil {
				return err
			}
			if err := command(ctx, c.path, "init", "-repo", c.repo).Run(); err != nil {
				return fmt.Errorf("%s init: %w", c.path, err)
			}
			var firstStart time.Time
			for kind, what := range []string{"first", "incremental"} {
				if kind == 1 {
					// Every CLI's incremental restore point holds what the
					// writer wrote in the same time since the first's.
					select {
					case <-time.After(time.Until(firstStart.Add(interval))):
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				if err := warm(fss); err != nil {
					return err
				}
				if kind == 0 {
					firstStart = time.Now()
				}
				res, err := c.create(ctx, fss)
				if err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "run %d %s, %s: freeze %d ms, wall %s, changed %s, %s, captures %v\n", r+1, c.name, what,
					res.freeze.Milliseconds(), res.wall.Round(time.Millisecond), humanize.IBytes(uint64(res.changed)), res.consistency, res.captures)
				results[c.name][kind] = append(results[c.name][kind], res)
			}
		}
	}
	writes := writer.writes() // and every stall reported
	for _, kinds := range results {
		for _, rs := range kinds {
			for i := range rs {
				rs[i].stall = stalls.longest(rs[i].start, rs[i].end)
			}
		}
	}
	fmt.Print(table(clis, results, writes))
	return nil
}

// checkNoReflinks makes sure diskpoint cannot clone the images, so that it
// reads them inside the freeze window.
func checkNoReflinks(ctx context.Context, dir string) error {
	probe := filepath.Join(dir, "probe")
	if err := os.WriteFile(probe, make([]byte, 4096), 0o600); err != nil {
		return err
	}
	defer os.Remove(probe)
	clone, err := blockdiff.ReflinkClone(ctx, probe)
	if errors.Is(err, blockdiff.ErrNoReflink) {
		return nil
	}
	if err == nil {
		os.Remove(clone)
		return fmt.Errorf("%s has reflinks: diskpoint would clone the images instead of reading them inside the freeze", dir)
	}
	return err
}

// setUp makes, attaches, mounts and fills fs: files of the mixed image's
// content (holes, text, random data, repeated runs) up to about 60% of it.
func setUp(ctx context.Context, fs *fileSystem, work string, seed uint64) error {
	f, err := os.Create(fs.image)
	if err != nil {
		return err
	}
	err = f.Truncate(fs.size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := command(ctx, "mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", fs.image).Run(); err != nil {
		return fmt.Errorf("mkfs.ext4 %s: %w", fs.image, err)
	}
	out, err := command(ctx, "losetup", "--find", "--show", fs.image).Output()
	if err != nil {
		return fmt.Errorf("losetup %s: %w", fs.image, err)
	}
	fs.dev = strings.TrimSpace(string(out))
	mnt := filepath.Join(work, "mnt-"+fs.name)
	if err := os.Mkdir(mnt, 0o700); err != nil {
		return err
	}
	if err := command(ctx, "mount", fs.dev, mnt).Run(); err != nil {
		return fmt.Errorf("mount %s: %w", fs.dev, err)
	}
	fs.mnt = mnt
	const fileSize = 128 << 20
	for i := range int(fs.size * 6 / 10 / fileSize) {
		path := filepath.Join(mnt, fmt.Sprintf("file%02d", i))
		if err := demodisk.Create(path, fileSize, seed*100+uint64(i), demodisk.MixedImage); err != nil {
			return err
		}
	}
	return command(ctx, "sync").Run()
}

// teardown unmounts and detaches what setUp made, as far as it got.
func teardown(fss []*fileSystem) error {
	var errs []error
	for _, fs := range fss {
		if fs.mnt != "" {
			exec.Command("fsfreeze", "-u", fs.mnt).Run() // frozen only if a create died inside the window
			if out, err := exec.Command("umount", fs.mnt).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("umount %s: %w: %s", fs.mnt, err, out))
			}
		}
		if fs.dev != "" {
			if out, err := exec.Command("losetup", "-d", fs.dev).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("losetup -d %s: %w: %s", fs.dev, err, out))
			}
		}
	}
	return errors.Join(errs...)
}

// touchEnv makes this program touch that many bytes of new memory, and
// exit.
const touchEnv = "FREEZEWINDOW_TOUCH"

// touchSize is how much memory warm touches and frees: more than a create
// allocates, spool included.
const touchSize = 2 << 30

// touch writes to n bytes of new memory; exiting frees them.
func touch(n int64) {
	mem := make([]byte, n)
	for i := 0; i < len(mem); i += 4096 {
		mem[i] = 1
	}
}

// warm starts every create alike, as bench/compare does: dirty pages
// written back, the images read into the page cache, and memory touched
// and freed in a process of its own. The last is for VMs whose balloon
// takes back free pages after seconds and returns them one host fault at
// a time: there a create that allocates memory the machine has not used
// lately pays for the faults, which a host without a balloon does not.
func warm(fss []*fileSystem) error {
	if err := exec.Command("sync").Run(); err != nil {
		return err
	}
	for _, fs := range fss {
		f, err := os.Open(fs.image)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, f)
		f.Close()
		if err != nil {
			return err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	toucher := exec.Command(self)
	toucher.Env = append(os.Environ(), fmt.Sprintf("%s=%d", touchEnv, touchSize))
	toucher.Stderr = os.Stderr
	if err := toucher.Run(); err != nil {
		return fmt.Errorf("touching memory: %w", err)
	}
	return nil
}

// create takes one restore point of both file systems, frozen.
func (c *cli) create(ctx context.Context, fss []*fileSystem) (createResult, error) {
	args := []string{"create", "-repo", c.repo, "-collection", "vm", "-consistency", "filesystem", "-max-freeze", "2m", "-json"}
	for _, fs := range fss {
		args = append(args, "-freeze", fs.mnt)
	}
	for _, fs := range fss {
		args = append(args, fs.name+"="+fs.image)
	}
	cmd := command(ctx, c.path, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	end := time.Now()
	if err != nil {
		return createResult{}, fmt.Errorf("%s %s: %w\n%s", c.path, strings.Join(args, " "), err, stderr.Bytes())
	}
	var rp struct {
		FreezeMillis int64  `json:"freeze_ms"`
		Consistency  string `json:"consistency"`
		Disks        []struct {
			Capture      string `json:"capture"`
			ChangedBytes int64  `json:"changed_bytes"`
			StoredBytes  int64  `json:"stored_bytes"`
		} `json:"disks"`
	}
	if err := json.Unmarshal(out, &rp); err != nil {
		return createResult{}, fmt.Errorf("%s create -json: %w", c.path, err)
	}
	res := createResult{
		start: start, end: end, wall: end.Sub(start),
		freeze: time.Duration(rp.FreezeMillis) * time.Millisecond, consistency: rp.Consistency,
	}
	for _, d := range rp.Disks {
		res.captures = append(res.captures, d.Capture)
		res.changed += d.ChangedBytes
		res.stored += d.StoredBytes
	}
	return res, nil
}

// command runs name; a cancelled ctx interrupts it as Ctrl-C does, so
// that a create thaws what it froze.
func command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = time.Minute
	cmd.Stderr = os.Stderr
	return cmd
}

// writerProc is the writer process and what it reports.
type writerProc struct {
	cmd   *exec.Cmd
	done  chan struct{} // closed when its output has been read to the end
	count int64
	once  sync.Once
}

// stallLog keeps the writer's stalls: when each write began and how long it took.
type stallLog struct {
	mu     sync.Mutex
	starts []time.Time
	lens   []time.Duration
}

func (l *stallLog) add(start time.Time, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.starts, l.lens = append(l.starts, start), append(l.lens, d)
}

// longest is the longest stall that overlapped [from, to].
func (l *stallLog) longest(from, to time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var longest time.Duration
	for i, s := range l.starts {
		if s.Before(to) && s.Add(l.lens[i]).After(from) {
			longest = max(longest, l.lens[i])
		}
	}
	return longest
}

// startWriter runs this program as the writer, and collects the stalls it
// reports on its standard output ("stall START_UNIX_NS DURATION_NS"; at the
// end "writes N").
func startWriter(ctx context.Context, fss []*fileSystem) (*writerProc, *stallLog, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	var mounts []string
	for _, fs := range fss {
		mounts = append(mounts, fs.mnt)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), writerEnv+"="+strings.Join(mounts, ","))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	w := &writerProc{cmd: cmd, done: make(chan struct{})}
	stalls := &stallLog{}
	go func() {
		defer close(w.done)
		lines := bufio.NewScanner(out)
		for lines.Scan() {
			f := strings.Fields(lines.Text())
			switch {
			case len(f) == 3 && f[0] == "stall":
				start, _ := strconv.ParseInt(f[1], 10, 64)
				d, _ := strconv.ParseInt(f[2], 10, 64)
				stalls.add(time.Unix(0, start), time.Duration(d))
			case len(f) == 2 && f[0] == "writes":
				w.count, _ = strconv.ParseInt(f[1], 10, 64)
			}
		}
	}()
	return w, stalls, nil
}

// stop ends the writer, once.
func (w *writerProc) stop() {
	w.once.Do(func() {
		w.cmd.Process.Signal(syscall.SIGTERM)
		<-w.done
		w.cmd.Wait()
	})
}

func (w *writerProc) writes() int64 {
	w.stop()
	return w.count
}

// write is the writer process: in a 64 MiB file on each mount point it
// rewrites 4-64 KiB at random places, each write followed by fdatasync, as
// a database's log and data writes are, about 200 times a second, until
// SIGTERM. Writes that take longer than stallReport are reported.
func write(mounts []string) error {
	var files []*os.File
	for _, m := range mounts {
		f, err := os.OpenFile(filepath.Join(m, "writer.dat"), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := f.Truncate(64 << 20); err != nil {
			return err
		}
		files = append(files, f)
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	rng := rand.New(rand.NewPCG(3, 4))
	buf := make([]byte, 64<<10)
	pace := time.NewTicker(5 * time.Millisecond)
	defer pace.Stop()
	var writes int64
	for i := 0; ; i++ {
		select {
		case <-term:
			fmt.Printf("writes %d\n", writes)
			return nil
		case <-pace.C:
		}
		f := files[i%len(files)]
		n := (1 + rng.IntN(16)) * 4096
		off := rng.Int64N((64<<20)/4096-16) * 4096
		for k := range buf[:n] {
			buf[k] = byte(rng.Uint32())
		}
		start := time.Now()
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			return err
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return err
		}
		writes++
		if d := time.Since(start); d > stallReport {
			fmt.Printf("stall %d %d\n", start.UnixNano(), d.Nanoseconds())
		}
	}
}

// table prints, per CLI, the medians of the first and of the incremental
// restore points.
func table(clis []*cli, results map[string]*[2][]createResult, writes int64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Measured %s on %s: median of %d runs, fastest and slowest beside it; %d writes by the writer in all.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), hostDescription(), len(results[clis[0].name][0]), writes)
	b.WriteString("| CLI | restore point | freeze_ms | fastest - slowest | writer's longest stall | create wall time | changed | stored |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- |\n")
	ms := func(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }
	for _, c := range clis {
		for kind, what := range []string{"first (full)", "incremental"} {
			rs := results[c.name][kind]
			lo, hi := spread(rs, func(r createResult) time.Duration { return r.freeze })
			fmt.Fprintf(&b, "| %s | %s | %s | %s - %s | %s ms | %.2f s | %s | %s |\n", c.name, what,
				ms(median(rs, func(r createResult) time.Duration { return r.freeze })), ms(lo), ms(hi),
				ms(median(rs, func(r createResult) time.Duration { return r.stall })),
				median(rs, func(r createResult) time.Duration { return r.wall }).Seconds(),
				humanize.IBytes(uint64(medianInt(rs, func(r createResult) int64 { return r.changed }))),
				humanize.IBytes(uint64(medianInt(rs, func(r createResult) int64 { return r.stored }))))
		}
	}
	return b.String()
}

// hostDescription says what the figures were measured on.
func hostDescription() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s (%d CPUs, load average %s)", host, runtime.NumCPU(), loadAverage())
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

func median(rs []createResult, f func(createResult) time.Duration) time.Duration {
	var v []time.Duration
	for _, r := range rs {
		v = append(v, f(r))
	}
	slices.Sort(v)
	return v[len(v)/2]
}

func medianInt(rs []createResult, f func(createResult) int64) int64 {
	var v []int64
	for _, r := range rs {
		v = append(v, f(r))
	}
	slices.Sort(v)
	return v[len(v)/2]
}

func spread(rs []createResult, f func(createResult) time.Duration) (lo, hi time.Duration) {
	for i, r := range rs {
		if d := f(r); i == 0 || d < lo {
			lo = d
		}
		if d := f(r); d > hi {
			hi = d
		}
	}
	return lo, hi
}
