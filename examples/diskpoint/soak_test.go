package main

// TestSoak: three processes share one repository for a bounded time.
//
// Flags (go test ./examples/diskpoint -run TestSoak -soak 5m -soak-seed 3 -v):
//
//	-soak DURATION  how long the three workers run (default 60s; with -short
//	                8s unless -soak is given)
//	-soak-seed N    seed of the workers' random choices, to reproduce a run
//
// The NBD part needs qemu-img (qemu-utils): without it the test skips that
// part with a message, except under CI=true, where a missing qemu-img fails.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/internal/demodisk"
)

var (
	soakFor  = flag.Duration("soak", 60*time.Second, "how long TestSoak's three processes share a repository (8s with -short unless given)")
	soakSeed = flag.Uint64("soak-seed", 1, "seed of TestSoak's random choices, to reproduce a run")
)

const (
	// soakLockWait is what every command that has -lock-wait is given: far
	// longer than any one operation here takes, so a lock refusal from such
	// a command is a failure, not a wait that ran out.
	soakLockWait = "2m"
	// soakOpTimeout bounds one child process, so a hang fails the test
	// instead of running into the package's timeout.
	soakOpTimeout = 4 * time.Minute
	soakWorkers   = 3
	soakMaxOps    = 5000 // per worker: the soak is bounded in count as well as time
	soakDiskSize  = 3 << 20
	soakKeepLast  = 3
)

// pointState is where a restore point is in its life, as the soak knows it.
type pointState int

const (
	pointLive     pointState = iota
	pointDeleting            // a delete or prune of it is running
	pointDeleted
)

// soakPoint is a restore point some operation committed, and what it must
// restore to.
type soakPoint struct {
	repo, collection, id string
	images               map[string]string // disk name -> file holding the bytes it captured
	state                pointState
	seq                  int  // commit order, for prune's keep-last
	copied               bool // a copy of it is in the second repository, or on its way
}

func (p *soakPoint) String() string { return p.collection + "/" + p.id }

// soak is the shared state of TestSoak's workers.
type soak struct {
	t                        *testing.T
	dir, repo, dr, imagesDir string
	format                   string                       // the kind of repositories, as testRepoFormat says
	disks                    map[string]map[string]string // source collection -> disk -> image path
	// collectionMu serialises the soak's own changes to a collection (mutate
	// its disks and create, delete, prune), so that it always knows which
	// points must exist. Everything else runs beside them.
	collectionMu map[string]*sync.Mutex
	lockWait     map[string]bool // command -> it accepts -lock-wait
	qemu         bool

	mu        sync.Mutex
	points    map[string]*soakPoint // repo|collection/id
	seq       int
	failures  []string
	failedOps map[string]int // op -> failures
	done      map[string]int // op -> completed
	refused   map[string]int // op -> refused by a lock, as the CLI documents for commands without -lock-wait
	vanished  map[string]int // op -> read a point deleted meanwhile and was told "not found"
}

// TestSoak runs three processes' worth of work against one repository for
// -soak (60s; 8s with -short): creates on two collections of two disks,
// restores checked bit-exact, an NBD export read by qemu-img, diff, copy into
// a second repository, verify, delete, prune and GC, each as a child process
// of the CLI. Every failure is kept and listed. It ends with every committed
// restore point restoring bit-exact, both repositories verifying clean, a GC
// that succeeds, and no locks or temp files left behind. DISKPOINT_TEST_FORMAT
// picks the kind of repositories (testRepoFormat).
func TestSoak(t *testing.T) {
	duration := *soakFor
	if testing.Short() && !flagGiven("soak") {
		duration = 8 * time.Second
	}
	s := newSoak(t)
	deadline := time.Now().Add(duration)
	var wg sync.WaitGroup
	for w := range soakWorkers {
		rng := rand.New(rand.NewPCG(*soakSeed, uint64(w)))
		wg.Go(func() { s.work(w, rng, deadline) })
	}
	wg.Wait()
	s.mu.Lock()
	t.Logf("format %s, seed %d, %s: done %v; refused by a lock (documented, counted) %v; read a point deleted meanwhile %v",
		s.format, *soakSeed, duration, s.done, s.refused, s.vanished)
	s.mu.Unlock()

	s.finalChecks()
	if len(s.failures) > 0 {
		t.Errorf("%d operations failed during the soak (%v):\n%s", len(s.failures), s.failedOps, strings.Join(s.failures, "\n"))
	}
}

// flagGiven reports whether the named flag was set on the command line.
func flagGiven(name string) bool {
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

func newSoak(t *testing.T) *soak {
	dir := t.TempDir()
	s := &soak{t: t, dir: dir, repo: filepath.Join(dir, "repo"), dr: filepath.Join(dir, "dr"), imagesDir: filepath.Join(dir, "images"),
		disks: map[string]map[string]string{}, collectionMu: map[string]*sync.Mutex{}, lockWait: map[string]bool{},
		points: map[string]*soakPoint{}, failedOps: map[string]int{}, done: map[string]int{}, refused: map[string]int{}, vanished: map[string]int{}}
	if err := os.Mkdir(s.imagesDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, collection := range []string{"dr0", "dr1"} {
		s.collectionMu[collection] = &sync.Mutex{}
	}
	s.format = testRepoFormat(t)
	for _, repo := range []string{s.repo, s.dr} {
		for _, p := range initTestRepo(t, repo, s.format, "-block-size", "16KiB") {
			images := map[string]string{}
			for disk, data := range p.images {
				image, err := s.keepImage(data)
				if err != nil {
					t.Fatal(err)
				}
				images[disk] = image
			}
			if s.collectionMu[p.collection] == nil {
				s.collectionMu[p.collection] = &sync.Mutex{}
			}
			s.addPoint(repo, p.collection, p.id, images)
		}
	}
	for c, collection := range []string{"vm0", "vm1"} {
		s.collectionMu[collection] = &sync.Mutex{}
		s.disks[collection] = map[string]string{}
		for d, disk := range []string{"a", "b"} {
			path := filepath.Join(dir, collection+"-"+disk+".img")
			// Disk a starts the same in both collections: dedup across collections.
			seed := uint64(1 + d*(10+c))
			if err := demodisk.Create(path, soakDiskSize, seed, demodisk.MixedImage); err != nil {
				t.Fatal(err)
			}
			s.disks[collection][disk] = path
		}
	}
	// Commands that can wait for a lock are given -lock-wait; the others may
	// refuse with ErrLocked, which the CLI documents, and are counted.
	for _, command := range []string{"create", "restore", "diff", "copy", "verify", "delete", "prune", "gc", "serve-nbd", "list"} {
		_, out, errOut := cli(t, command, "-h") // -h prints to stdout; usage errors go to stderr
		s.lockWait[command] = strings.Contains(out+errOut, "-lock-wait")
	}
	if !s.lockWait["create"] || !s.lockWait["gc"] {
		// Else no command gets -lock-wait, and every lock refusal counts as
		// documented: the soak would prove less than it says.
		t.Fatalf("the help of create and gc does not name -lock-wait: %v", s.lockWait)
	}
	if _, err := exec.LookPath("qemu-img"); err == nil {
		s.qemu = true
	} else if os.Getenv("CI") == "true" {
		t.Fatal("qemu-img is missing (.ci/run installs qemu-utils)")
	} else {
		t.Log("no qemu-img (apt-get install qemu-utils): the soak runs without its NBD export")
	}
	return s
}

// work is one worker: a "process" that runs one random CLI command after
// another, each in a child process, until the deadline.
func (s *soak) work(w int, rng *rand.Rand, deadline time.Time) {
	type op struct {
		name   string
		weight int
		run    func(w int, rng *rand.Rand)
	}
	ops := []op{
		{"create", 4, s.create}, {"restore", 3, s.restore}, {"diff", 2, s.diff}, {"copy", 2, s.copy},
		{"verify", 2, s.verify}, {"delete", 1, s.delete}, {"prune", 1, s.prune}, {"gc", 2, s.gc},
	}
	if s.qemu {
		ops = append(ops, op{"nbd", 1, s.nbd})
	}
	total := 0
	for _, o := range ops {
		total += o.weight
	}
	for n := 0; n < soakMaxOps && time.Now().Before(deadline); n++ {
		pick := rng.IntN(total)
		for _, o := range ops {
			if pick -= o.weight; pick < 0 {
				o.run(w, rng)
				break
			}
		}
	}
}

// result is what one child process did.
type result struct {
	args           []string
	stdout, stderr string
	err            error
}

func (r result) String() string {
	return fmt.Sprintf("diskpoint %s: %v: %s", strings.Join(r.args, " "), r.err, strings.TrimSpace(r.stderr))
}

// run runs the CLI in a child process.
func (s *soak) run(args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), soakOpTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = childEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("still running after %s, killed: %w", soakOpTimeout, err)
	}
	return result{args, stdout.String(), stderr.String(), err}
}

// childEnv is the environment of a CLI child process. Under the race
// detector a process sleeps 1 s at exit (GORACE atexit_sleep_ms) unless told
// otherwise: that second would be most of every short command's time.
func childEnv() []string {
	env := append(os.Environ(), "DISKPOINT_TEST_CLI=1")
	gorace := "atexit_sleep_ms=0"
	if old := os.Getenv("GORACE"); old != "" {
		gorace = old + " " + gorace
	}
	return append(env, "GORACE="+gorace)
}

// syncBuffer is a bytes.Buffer that a running child writes while the test
// reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Bytes returns a copy of what was written so far.
func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// withLockWait adds -lock-wait to a command that has it.
func (s *soak) withLockWait(args ...string) []string {
	if s.lockWait[args[0]] {
		args = append(args, "-lock-wait", soakLockWait)
	}
	return args
}

// fail records a failure; the test fails listing all of them at the end.
func (s *soak) fail(w int, op, format string, args ...any) {
	msg := fmt.Sprintf("[worker %d, %s, %s] %s", w, op, time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, msg)
	s.failedOps[op]++
}

func (s *soak) count(m map[string]int, op string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m[op]++
}

// refusedByLock reports whether r is a lock refusal the CLI documents: the
// command has no -lock-wait, so another process's conflicting lock makes it
// fail at once with ErrLocked.
func (s *soak) refusedByLock(r result) bool {
	return r.err != nil && !s.lockWait[r.args[0]] && strings.Contains(r.stderr, ": locked")
}

// finish counts r: done, refused by a lock as documented, or failed.
func (s *soak) finish(w int, op string, r result) bool {
	switch {
	case r.err == nil:
		s.count(s.done, op)
		return true
	case s.refusedByLock(r):
		s.count(s.refused, op)
	default:
		s.fail(w, op, "%s", r)
	}
	return false
}

// readerFailed handles the failure of a command that reads point p: "not
// found" is right if p was deleted meanwhile; anything else is a failure.
func (s *soak) readerFailed(w int, op string, r result, p ...*soakPoint) {
	s.mu.Lock()
	gone := false
	for _, q := range p {
		gone = gone || q.state != pointLive && pointGone(r.stderr, q.id)
	}
	s.mu.Unlock()
	switch {
	case gone:
		s.count(s.vanished, op)
	case s.refusedByLock(r):
		s.count(s.refused, op)
	default:
		s.fail(w, op, "%s", r)
	}
}

// pointGone reports whether stderr says that restore point id does not
// exist (ErrNotFound for the manifest), and not that something it needs is
// missing: a pack or blob that is not found is damage, or a reader that GC
// pulled the floor from under, and is never acceptable.
func pointGone(stderr, id string) bool {
	return strings.Contains(stderr, fmt.Sprintf("restore point %q", id)) && strings.HasSuffix(strings.TrimSpace(stderr), "not found") &&
		!strings.Contains(stderr, "packs/") && !strings.Contains(stderr, "corrupt") && !strings.Contains(stderr, "blob")
}

// saveImage keeps the bytes of the disk at path, named by their hash.
func (s *soak) saveImage(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return s.keepImage(data)
}

// keepImage keeps data, the bytes of a disk, named by their hash.
func (s *soak) keepImage(data []byte) (string, error) {
	sum := sha256.Sum256(data)
	name := filepath.Join(s.imagesDir, hex.EncodeToString(sum[:16]))
	if _, err := os.Stat(name); err == nil {
		return name, nil
	}
	tmp, err := os.CreateTemp(s.imagesDir, "tmp-")
	if err != nil {
		return "", err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	return name, os.Rename(tmp.Name(), name)
}

// sameBytes compares a file with a kept image; a mismatch is described.
func sameBytes(got, want string) error {
	a, err := os.ReadFile(got)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(want)
	if err != nil {
		return err
	}
	if bytes.Equal(a, b) {
		return nil
	}
	if len(a) != len(b) {
		return fmt.Errorf("%d bytes, want %d", len(a), len(b))
	}
	first := 0
	for a[first] == b[first] {
		first++
	}
	return fmt.Errorf("bytes differ, first at offset %d", first)
}

// addPoint records a committed restore point.
func (s *soak) addPoint(repo, collection, id string, images map[string]string) *soakPoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	p := &soakPoint{repo: repo, collection: collection, id: id, images: images, seq: s.seq}
	s.points[repo+"|"+collection+"/"+id] = p
	return p
}

// livePoints returns the live points that match.
func (s *soak) livePoints(match func(*soakPoint) bool) []*soakPoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*soakPoint
	for _, p := range s.points {
		if p.state == pointLive && match(p) {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

func (s *soak) randomPoint(rng *rand.Rand, match func(*soakPoint) bool) *soakPoint {
	points := s.livePoints(match)
	if len(points) == 0 {
		return nil
	}
	return points[rng.IntN(len(points))]
}

func anyPoint(*soakPoint) bool { return true }

func (s *soak) setState(p *soakPoint, state pointState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p.state = state
}

func randomDisk(rng *rand.Rand, p *soakPoint) string {
	names := make([]string, 0, len(p.images))
	for name := range p.images {
		names = append(names, name)
	}
	sort.Strings(names)
	return names[rng.IntN(len(names))]
}

// create changes both disks of a collection a little and takes a restore
// point of them.
func (s *soak) create(w int, rng *rand.Rand) {
	collection := fmt.Sprintf("vm%d", rng.IntN(2))
	s.collectionMu[collection].Lock()
	defer s.collectionMu[collection].Unlock()
	args := s.withLockWait("create", "-repo", s.repo, "-collection", collection, "-json")
	images := map[string]string{}
	for _, disk := range []string{"a", "b"} {
		path := s.disks[collection][disk]
		if _, err := demodisk.Scatter(path, 0.03, rng.Uint64()); err != nil {
			s.fail(w, "create", "change disk %s: %v", path, err)
			return
		}
		image, err := s.saveImage(path)
		if err != nil {
			s.fail(w, "create", "keep disk %s: %v", path, err)
			return
		}
		images[disk] = image
		args = append(args, disk+"="+path)
	}
	r := s.run(args...)
	if !s.finish(w, "create", r) {
		return
	}
	var rp struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rp); err != nil || rp.ID == "" {
		s.fail(w, "create", "create -json printed %q: %v", r.stdout, err)
		return
	}
	s.addPoint(s.repo, collection, rp.ID, images)
}

// restore restores one disk of a live point of either repository and checks
// every byte.
func (s *soak) restore(w int, rng *rand.Rand) {
	p := s.randomPoint(rng, anyPoint)
	if p == nil {
		return
	}
	disk := randomDisk(rng, p)
	out := filepath.Join(s.dir, fmt.Sprintf("restore-%d.img", w))
	defer os.Remove(out)
	r := s.run("restore", "-repo", p.repo, "-collection", p.collection, "-point", p.id, "-disk", disk, "-to", out)
	if r.err != nil {
		s.readerFailed(w, "restore", r, p)
		return
	}
	s.count(s.done, "restore")
	if err := sameBytes(out, p.images[disk]); err != nil {
		s.fail(w, "restore", "restore point %s (%s) disk %s restored wrong: %v", p, p.repo, disk, err)
	}
}

// diff lists the ranges that differ between two points of a collection and
// checks them against the images: a block is listed exactly when its bytes
// differ.
func (s *soak) diff(w int, rng *rand.Rand) {
	collection := fmt.Sprintf("vm%d", rng.IntN(2))
	points := s.livePoints(func(p *soakPoint) bool { return p.repo == s.repo && p.collection == collection })
	if len(points) < 2 {
		return
	}
	from, to := points[rng.IntN(len(points))], points[rng.IntN(len(points))]
	disk := randomDisk(rng, from)
	r := s.run("diff", "-repo", s.repo, "-collection", collection, "-from", from.id, "-to", to.id, "-disk", disk, "-json")
	if r.err != nil {
		s.readerFailed(w, "diff", r, from, to)
		return
	}
	s.count(s.done, "diff")
	a, errA := os.ReadFile(from.images[disk])
	b, errB := os.ReadFile(to.images[disk])
	if errA != nil || errB != nil {
		s.fail(w, "diff", "read kept images: %v %v", errA, errB)
		return
	}
	if err := checkDiff(r.stdout, a, b, 16<<10); err != nil {
		s.fail(w, "diff", "diff %s..%s disk %s: %v", from, to, disk, err)
	}
}

// checkDiff checks what diff -json printed against the two images: a block
// is listed exactly when its bytes differ.
func checkDiff(printed string, a, b []byte, block int) error {
	var ranges []struct{ Offset, Length int64 }
	if err := json.Unmarshal([]byte(printed), &ranges); err != nil {
		return fmt.Errorf("diff -json printed %q: %w", printed, err)
	}
	if len(a) != len(b) {
		return fmt.Errorf("images of %d and %d bytes", len(a), len(b))
	}
	listed := make([]bool, (len(a)+block-1)/block)
	for _, rg := range ranges {
		for off := rg.Offset; off < rg.Offset+rg.Length; off += int64(block) {
			if off < 0 || off/int64(block) >= int64(len(listed)) {
				return fmt.Errorf("range %d+%d is outside the disk", rg.Offset, rg.Length)
			}
			listed[off/int64(block)] = true
		}
	}
	for i := range listed {
		lo, hi := i*block, min((i+1)*block, len(a))
		if differs := !bytes.Equal(a[lo:hi], b[lo:hi]); differs != listed[i] {
			return fmt.Errorf("block at %d: bytes differ %v, listed %v", lo, differs, listed[i])
		}
	}
	return nil
}

// copy copies a live point into the second repository.
func (s *soak) copy(w int, rng *rand.Rand) {
	s.mu.Lock()
	var fresh []*soakPoint
	for _, p := range s.points {
		if p.repo == s.repo && p.state == pointLive && !p.copied {
			fresh = append(fresh, p)
		}
	}
	sort.Slice(fresh, func(i, j int) bool { return fresh[i].seq < fresh[j].seq })
	var p *soakPoint
	if len(fresh) > 0 {
		p = fresh[rng.IntN(len(fresh))]
		p.copied = true
	}
	s.mu.Unlock()
	if p == nil {
		return
	}
	target := "dr" + strings.TrimPrefix(p.collection, "vm")
	r := s.run(s.withLockWait("copy", "-repo", s.repo, "-collection", p.collection, "-point", p.id,
		"-to-repo", s.dr, "-to-collection", target, "-checkpoint", "256KiB", "-json")...)
	if r.err != nil {
		s.mu.Lock()
		p.copied = false
		s.mu.Unlock()
		s.readerFailed(w, "copy", r, p)
		return
	}
	s.count(s.done, "copy")
	var copied struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &copied); err != nil || copied.ID != p.id {
		s.fail(w, "copy", "copy -json printed %q (want id %s): %v", r.stdout, p.id, err)
		return
	}
	s.addPoint(s.dr, target, copied.ID, p.images)
}

// verify checks a whole repository; it must find no damage, ever.
func (s *soak) verify(w int, rng *rand.Rand) {
	repo := s.repo
	if rng.IntN(3) == 0 {
		repo = s.dr
	}
	r := s.run(s.withLockWait("verify", "-repo", repo, "-json")...)
	var report struct {
		Damage []struct {
			Kind, ID, Pack, Reason string
			RestorePoints          []string `json:"restore_points"`
		}
	}
	if r.err != nil && json.Unmarshal([]byte(r.stdout), &report) == nil && len(report.Damage) > 0 {
		var lines []string
		for _, d := range report.Damage {
			lines = append(lines, fmt.Sprintf("%s %s (pack %s): %s (needed by %v)", d.Kind, d.ID, d.Pack, d.Reason, d.RestorePoints))
		}
		s.fail(w, "verify", "verify %s reports %d damaged objects: %s", filepath.Base(repo), len(lines), strings.Join(lines, "; "))
		return
	}
	s.finish(w, "verify", r)
}

// delete deletes a live point, mostly of the first repository.
func (s *soak) delete(w int, rng *rand.Rand) {
	repo := s.repo
	if rng.IntN(4) == 0 {
		repo = s.dr
	}
	p := s.randomPoint(rng, func(p *soakPoint) bool { return p.repo == repo })
	if p == nil {
		return
	}
	s.deletePoint(w, "delete", p)
}

// deletePoint deletes p and reports whether it did.
func (s *soak) deletePoint(w int, op string, p *soakPoint) bool {
	s.collectionMu[p.collection].Lock()
	defer s.collectionMu[p.collection].Unlock()
	s.mu.Lock()
	if p.state != pointLive {
		s.mu.Unlock()
		return false
	}
	p.state = pointDeleting
	s.mu.Unlock()
	r := s.run(s.withLockWait("delete", "-repo", p.repo, "-collection", p.collection, "-point", p.id)...)
	if !s.finish(w, op, r) {
		s.setState(p, pointLive)
		return false
	}
	s.setState(p, pointDeleted)
	return true
}

// prune keeps the newest soakKeepLast points of a collection, and must
// delete exactly the others.
func (s *soak) prune(w int, rng *rand.Rand) {
	collection := fmt.Sprintf("vm%d", rng.IntN(2))
	s.collectionMu[collection].Lock()
	defer s.collectionMu[collection].Unlock()
	points := s.livePoints(func(p *soakPoint) bool { return p.repo == s.repo && p.collection == collection })
	doomed := points[:max(len(points)-soakKeepLast, 0)]
	for _, p := range doomed {
		s.setState(p, pointDeleting)
	}
	r := s.run(s.withLockWait("prune", "-repo", s.repo, "-collection", collection, "-keep-last", fmt.Sprint(soakKeepLast), "-json")...)
	if !s.finish(w, "prune", r) {
		for _, p := range doomed {
			s.setState(p, pointLive) // a failed prune is listed; what it left is checked at the end
		}
		return
	}
	var result struct {
		Deleted []struct {
			ID string `json:"id"`
		} `json:"deleted"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &result); err != nil {
		s.fail(w, "prune", "prune -json printed %q: %v", r.stdout, err)
		return
	}
	var want, got []string
	for _, p := range doomed {
		want = append(want, p.id)
		s.setState(p, pointDeleted)
	}
	for _, d := range result.Deleted {
		got = append(got, d.ID)
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(want, got) {
		s.fail(w, "prune", "prune -keep-last %d of %s deleted %v, want %v", soakKeepLast, collection, got, want)
	}
}

// gc collects garbage, mostly in the first repository.
func (s *soak) gc(w int, rng *rand.Rand) {
	repo := s.repo
	if rng.IntN(4) == 0 {
		repo = s.dr
	}
	s.finish(w, "gc", s.run(s.withLockWait("gc", "-repo", repo, "-json")...))
}

// nbd exports a disk of a live point with serve-nbd and has qemu-img read
// it all; half the time the point is deleted and garbage collected while
// the export runs, before qemu-img reads, as a VM booted from an export
// would see it. The bytes must be the point's, every time.
func (s *soak) nbd(w int, rng *rand.Rand) {
	p := s.randomPoint(rng, func(p *soakPoint) bool { return p.repo == s.repo })
	if p == nil {
		return
	}
	disk := randomDisk(rng, p)
	sockDir, err := os.MkdirTemp("", "soak-nbd-") // short: a socket path has at most 107 bytes
	if err != nil {
		s.fail(w, "nbd", "%v", err)
		return
	}
	defer os.RemoveAll(sockDir)
	ctx, cancel := context.WithTimeout(context.Background(), soakOpTimeout)
	defer cancel()
	args := []string{"serve-nbd", "-repo", p.repo, "-collection", p.collection, "-point", p.id, "-disk", disk, "-listen", "unix:" + filepath.Join(sockDir, "nbd.sock")}
	serve := exec.CommandContext(ctx, os.Args[0], args...)
	serve.Env = childEnv()
	var serveErr syncBuffer // written by exec while the export runs
	serve.Stderr = &serveErr
	stdout, err := serve.StdoutPipe()
	if err != nil {
		s.fail(w, "nbd", "%v", err)
		return
	}
	if err := serve.Start(); err != nil {
		s.fail(w, "nbd", "start serve-nbd: %v", err)
		return
	}
	line, readErr := bufio.NewReader(stdout).ReadString('\n')
	if readErr != nil { // it exited before serving
		go io.Copy(io.Discard, stdout)
		err := serve.Wait()
		s.readerFailed(w, "nbd", result{args, "", string(serveErr.Bytes()), fmt.Errorf("exited before serving: %v", err)}, p)
		return
	}
	go io.Copy(io.Discard, stdout)
	defer func() {
		serve.Process.Kill()
		serve.Wait()
	}()
	url := strings.TrimSpace(line[strings.LastIndex(line, " ")+1:])

	deleted := rng.IntN(2) == 0 && s.deletePoint(w, "delete", p)
	if deleted {
		if !s.finish(w, "gc", s.run(s.withLockWait("gc", "-repo", p.repo, "-json")...)) {
			return
		}
	}
	out := filepath.Join(s.dir, fmt.Sprintf("nbd-%d.img", w))
	defer os.Remove(out)
	what := "exported"
	if deleted {
		what = "exported, then deleted and garbage collected,"
	}
	if b, err := exec.CommandContext(ctx, "qemu-img", "convert", "-f", "raw", "-O", "raw", url, out).CombinedOutput(); err != nil {
		s.fail(w, "nbd", "qemu-img convert of %s disk %s (%s): %v: %s\n  serve-nbd said: %s", p, disk, what, err,
			firstLines(b, 1), firstLines(serveErr.Bytes(), 1))
		return
	}
	s.count(s.done, "nbd")
	if err := sameBytes(out, p.images[disk]); err != nil {
		s.fail(w, "nbd", "qemu-img read %s disk %s (%s) wrong: %v", p, disk, what, err)
	}
}

// finalChecks: the points that must exist do, and only they; each restores
// bit-exact; both repositories verify clean; GC succeeds and leaves no
// locks, temp files or unindexed packs.
func (s *soak) finalChecks() {
	t := s.t
	for _, repo := range []string{s.repo, s.dr} {
		name := filepath.Base(repo)
		collections := []string{"vm0", "vm1"}
		if repo == s.dr {
			collections = []string{"dr0", "dr1"}
		}
		for _, collection := range collections {
			var want []string
			for _, p := range s.livePoints(func(p *soakPoint) bool { return p.repo == repo && p.collection == collection }) {
				want = append(want, p.id)
			}
			var got []string
			if code, out, errOut := cli(t, "list", "-repo", repo, "-collection", collection, "-json"); code == 0 {
				var list []jsonPoint
				if err := json.Unmarshal([]byte(out), &list); err != nil {
					t.Errorf("at the end: list %s/%s -json printed %q: %v", name, collection, out, err)
				}
				for _, p := range list {
					got = append(got, p.ID)
				}
			} else if len(want) > 0 || !strings.Contains(errOut, "not found") {
				t.Errorf("at the end: list %s/%s: exit %d: %s", name, collection, code, errOut)
			}
			slices.Sort(want)
			slices.Sort(got)
			if !slices.Equal(want, got) {
				t.Errorf("at the end: %s/%s holds restore points %v, want exactly the committed, undeleted %v", name, collection, got, want)
			}
		}
		restored := 0
		for _, p := range s.livePoints(func(p *soakPoint) bool { return p.repo == repo }) {
			for disk, image := range p.images {
				out := filepath.Join(s.dir, "final.img")
				r := s.run("restore", "-repo", repo, "-collection", p.collection, "-point", p.id, "-disk", disk, "-to", out)
				if r.err != nil {
					t.Errorf("at the end: %s", r)
				} else if err := sameBytes(out, image); err != nil {
					t.Errorf("at the end: %s %s disk %s restores wrong: %v", name, p, disk, err)
				} else {
					restored++
				}
				os.Remove(out)
			}
		}
		t.Logf("at the end: %s: %d disks of committed restore points restore bit-exact", name, restored)
		if r := s.run("verify", "-repo", repo, "-json"); r.err != nil {
			t.Errorf("at the end: verify %s: %s\n%s", name, r, r.stdout)
		}
		if r := s.run("gc", "-repo", repo, "-json"); r.err != nil {
			t.Errorf("at the end: %s", r)
		}
		r := s.run("verify", "-repo", repo, "-json")
		var report struct {
			UnindexedPacks int `json:"unindexed_packs"`
		}
		if r.err != nil {
			t.Errorf("at the end, after gc: verify %s: %s\n%s", name, r, r.stdout)
		} else if err := json.Unmarshal([]byte(r.stdout), &report); err != nil || report.UnindexedPacks != 0 {
			t.Errorf("at the end, after gc: verify %s: %d unindexed packs (%v)", name, report.UnindexedPacks, err)
		}
		var leftovers []string
		filepath.Walk(repo, func(path string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() && (strings.HasPrefix(fi.Name(), ".tmp-") || strings.Contains(path, "/locks/")) {
				leftovers = append(leftovers, strings.TrimPrefix(path, repo))
			}
			return nil
		})
		if len(leftovers) > 0 {
			t.Errorf("at the end: locks or temp files left in %s after gc: %v", name, leftovers)
		}
	}
}
