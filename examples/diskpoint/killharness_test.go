package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

var (
	killCount = flag.Int("kills", 100, "SIGKILLs the kill harness delivers")
	killSeed  = flag.Uint64("kill-seed", 1, "seed of the kill harness, to reproduce a failure")
)

// harness is the state the kill harness keeps: what every committed restore
// point must restore to.
type harness struct {
	t        *testing.T
	dir      string
	format   string // the kind of repositories, as testRepoFormat says
	repo     string // the repository under attack
	dr       string // a second repository, the target of copies
	disks    map[string]string
	expected map[string]map[string][]byte // "repo|collection/id" -> disk -> image
	rng      *rand.Rand
	kills    map[string]int
	finished map[string]int
	// checked holds the restore points already restored bit-exact. Their
	// roots never change, so once verify is clean they restore the same
	// bytes again; all are restored once more at the end.
	checked map[string]bool
	// big is a larger disk of incompressible bytes, in its own collection:
	// what the readers that race a delete and GC read, so that they run long
	// enough to overlap them.
	big  string
	qemu bool // qemu-img is there to read NBD exports
	// readers counts how the readers that raced a delete and GC, and were
	// not killed, ended.
	readers map[string]int
}

// TestKillAtAnyInstant kills the CLI with SIGKILL at random moments of
// creates, deletes, prunes, copies and GCs, and of readers: restores, diffs
// (and the source side of copies), and readers that run while another
// process deletes the point they read and collects garbage ("readergc": a
// restore of a larger point, or serve-nbd read by qemu-img). A reader that
// is not killed must read exactly the point's bytes. On a fixed seed. After
// every kill: verify is clean (garbage aside), every committed restore point
// restores bit-exact, and the next GC succeeds and leaves no temp files,
// locks (a killed reader's lock is stale: its process is gone) or unindexed
// packs behind. -kills sets how many kills (default 100); -kill-seed
// reproduces a run. DISKPOINT_TEST_FORMAT picks the kind of repository
// (testRepoFormat): DISKPOINT_TEST_FORMAT=2 runs it on version 2.
func TestKillAtAnyInstant(t *testing.T) {
	if testing.Short() {
		t.Skip("the kill harness takes a while; run without -short")
	}
	h := &harness{t: t, dir: t.TempDir(), expected: map[string]map[string][]byte{},
		rng: rand.New(rand.NewPCG(*killSeed, 7)), kills: map[string]int{}, finished: map[string]int{}, checked: map[string]bool{}, readers: map[string]int{}}
	h.repo, h.dr = filepath.Join(h.dir, "repo"), filepath.Join(h.dir, "dr")
	h.format = testRepoFormat(t)
	for _, dir := range []string{h.repo, h.dr} {
		for _, p := range initTestRepo(t, dir, h.format, "-block-size", "16KiB") {
			h.expected[dir+"|"+p.collection+"/"+p.id] = p.images
		}
	}
	h.disks = map[string]string{"a": filepath.Join(h.dir, "a.img"), "b": filepath.Join(h.dir, "b.img")}
	for i, name := range []string{"a", "b"} {
		if err := demodisk.Create(h.disks[name], 3<<20, uint64(i+1), demodisk.MixedImage); err != nil {
			t.Fatal(err)
		}
	}
	h.big = filepath.Join(h.dir, "big.img")
	if err := demodisk.Create(h.big, 48<<20, 3, demodisk.Mix{Random: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("qemu-img"); err == nil {
		h.qemu = true
	} else if os.Getenv("CI") == "true" {
		t.Fatal("qemu-img is missing (.ci/run installs qemu-utils)")
	} else {
		t.Log("no qemu-img (apt-get install qemu-utils): readers that race GC are restores only, no NBD exports")
	}
	ops := []string{"create", "create", "create", "delete", "prune", "copy", "gc", "restore", "diff", "readergc"}
	budget := map[string]time.Duration{}
	for _, op := range ops { // calibrate: how long each op takes unkilled
		start := time.Now()
		h.run(op, -1)
		budget[op] = max(budget[op], time.Since(start))
	}
	total := 0
	for total < *killCount {
		op := ops[h.rng.IntN(len(ops))]
		// Kill anywhere from process start to a little past the op's usual end.
		delay := time.Duration(h.rng.Int64N(int64(budget[op]) * 3 / 2))
		if h.run(op, delay) {
			total++
			h.kills[op]++
			h.check(fmt.Sprintf("after kill %d (%s at %s)", total, op, delay))
		} else {
			h.finished[op]++
		}
	}
	h.checked = map[string]bool{}
	h.check("at the end")
	t.Logf("format %s, seed %d: %d kills survived (%v); %v finished before their kill; readers racing delete and GC, unkilled: %v",
		h.format, *killSeed, total, h.kills, h.finished, h.readers)
}

// run prepares op, runs it in a child process, and kills it after delay
// (never, when delay < 0). It reports whether the child was killed, and
// updates the expectations with whatever the op committed.
func (h *harness) run(op string, delay time.Duration) bool {
	t := h.t
	if op == "readergc" {
		return h.readerUnderGC(delay)
	}
	var args []string
	var images map[string][]byte
	var checkOutput func(stdout []byte) // what a reader that finished must have read
	collection := fmt.Sprintf("vm%d", h.rng.IntN(2))
	points := h.points(h.repo, collection)
	switch op {
	case "create":
		images = map[string][]byte{}
		for name, path := range h.disks {
			if _, err := demodisk.Scatter(path, 0.02, h.rng.Uint64()); err != nil {
				t.Fatal(err)
			}
			images[name] = readAll(t, path)
		}
		args = []string{"create", "-repo", h.repo, "-collection", collection, "-json", "a=" + h.disks["a"], "b=" + h.disks["b"]}
	case "delete":
		if len(points) == 0 {
			return h.run("create", delay)
		}
		args = []string{"delete", "-repo", h.repo, "-collection", collection, "-point", points[h.rng.IntN(len(points))]}
	case "prune":
		args = []string{"prune", "-repo", h.repo, "-collection", collection, "-keep-last", "3"}
	case "copy":
		var fresh []string
		for _, id := range points {
			if h.expected[h.dr+"|dr/"+id] == nil {
				fresh = append(fresh, id)
			}
		}
		if len(fresh) == 0 {
			return h.run("create", delay)
		}
		args = []string{"copy", "-repo", h.repo, "-collection", collection, "-point", fresh[h.rng.IntN(len(fresh))],
			"-to-repo", h.dr, "-to-collection", "dr", "-checkpoint", "256KiB"}
	case "gc":
		args = []string{"gc", "-repo", h.repo}
	case "restore":
		dir, coll := h.repo, collection
		if h.rng.IntN(3) == 0 {
			dir, coll = h.dr, "dr"
		}
		ids := h.points(dir, coll)
		if len(ids) == 0 {
			return h.run("create", delay)
		}
		id, disk := ids[h.rng.IntN(len(ids))], []string{"a", "b"}[h.rng.IntN(2)]
		want := h.expected[dir+"|"+coll+"/"+id][disk]
		out := filepath.Join(h.dir, "restored.img")
		os.Remove(out)
		args = []string{"restore", "-repo", dir, "-collection", coll, "-point", id, "-disk", disk, "-to", out}
		checkOutput = func([]byte) {
			if !bytes.Equal(readAll(t, out), want) {
				t.Fatalf("restore of %s/%s disk %s restored the wrong bytes", coll, id, disk)
			}
		}
	case "diff":
		if len(points) < 2 {
			return h.run("create", delay)
		}
		from, to, disk := points[h.rng.IntN(len(points))], points[h.rng.IntN(len(points))], []string{"a", "b"}[h.rng.IntN(2)]
		a, b := h.expected[h.repo+"|"+collection+"/"+from][disk], h.expected[h.repo+"|"+collection+"/"+to][disk]
		args = []string{"diff", "-repo", h.repo, "-collection", collection, "-from", from, "-to", to, "-disk", disk, "-json"}
		checkOutput = func(stdout []byte) {
			if err := checkDiff(string(stdout), a, b, 16<<10); err != nil {
				t.Fatalf("diff %s..%s disk %s: %v", from, to, disk, err)
			}
		}
	}
	before := map[string]bool{}
	for _, id := range points {
		before[id] = true
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = childEnv()
	var out, stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.MultiWriter(&out, &stdout), &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if delay >= 0 {
		timer := time.AfterFunc(delay, func() { cmd.Process.Signal(syscall.SIGKILL) })
		defer timer.Stop()
	}
	err := cmd.Wait()
	killed := false
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		killed = true
	} else if err != nil {
		t.Fatalf("diskpoint %s: %v\n%s", strings.Join(args, " "), err, out.Bytes())
	} else if checkOutput != nil {
		checkOutput(stdout.Bytes())
	}
	// Learn what was committed.
	switch op {
	case "create":
		for _, id := range h.points(h.repo, collection) {
			if !before[id] {
				h.expected[h.repo+"|"+collection+"/"+id] = images
			}
		}
	case "copy":
		id := args[6]
		if _, err := h.open(h.dr).Collection("dr"); err == nil && contains(h.points(h.dr, "dr"), id) {
			h.expected[h.dr+"|dr/"+id] = h.expected[h.repo+"|"+collection+"/"+id]
		}
	}
	return killed
}

// readerUnderGC is a reader racing a delete and a GC: a reader child reads
// the big restore point (a restore of it, or serve-nbd of it read by
// qemu-img) while other children delete that point and collect garbage.
// The reader is killed after delay, or completes; one that completes must
// have read exactly the point's bytes, as when nothing else ran (the point
// was there when it started). It reports whether the reader was killed.
func (h *harness) readerUnderGC(delay time.Duration) bool {
	t := h.t
	id := h.bigPoint()
	want := h.expected[h.repo+"|big/"+id]["d"]
	var killed atomic.Bool
	kill := func(cmd *exec.Cmd) *time.Timer {
		if delay < 0 {
			return time.AfterFunc(time.Hour, func() {})
		}
		return time.AfterFunc(delay, func() { killed.Store(true); cmd.Process.Signal(syscall.SIGKILL) })
	}
	deleteAndGC := func() {
		h.mustChild("delete", "-repo", h.repo, "-collection", "big", "-point", id)
		h.mustChild("gc", "-repo", h.repo, "-lock-wait", "1m")
	}

	if !h.qemu || h.rng.IntN(2) == 0 {
		out := filepath.Join(h.dir, "reader.img")
		os.Remove(out)
		tempFiles := filepath.Join(h.dir, ".reader.img.restoring-*")
		leftovers, _ := filepath.Glob(tempFiles) // of a restore killed before
		for _, name := range leftovers {
			os.Remove(name)
		}
		reader := h.child("restore", "-repo", h.repo, "-collection", "big", "-point", id, "-disk", "d", "-to", out)
		var stderr bytes.Buffer
		reader.Stderr = &stderr
		if err := reader.Start(); err != nil {
			t.Fatal(err)
		}
		timer := kill(reader)
		exited := make(chan error, 1)
		go func() { exited <- reader.Wait() }()
		// Half the time the delete races the restore's start; otherwise it
		// waits until the restore has read the manifest (its temp file is
		// there), so that the GC runs while it reads. Either way the restore
		// may find the point gone ("deleted while opening", ErrNotFound: the
		// reader lock may be taken after the temp file), or restores whole.
		opened := h.rng.IntN(2) == 0
		var err error
		exitedEarly := false
		for opened {
			if names, _ := filepath.Glob(tempFiles); len(names) > 0 {
				break
			}
			select {
			case err = <-exited:
				exitedEarly = true
			case <-time.After(time.Millisecond):
				continue
			}
			break
		}
		deleteAndGC()
		if !exitedEarly {
			err = <-exited
		}
		timer.Stop()
		switch {
		case killed.Load():
			return true
		case err != nil && pointGone(stderr.String(), id):
			h.readers["restore found its point deleted"]++
			return false
		case err != nil:
			t.Fatalf("a restore of big/%s while another process deleted it and collected garbage: %v: %s", id, err, stderr.Bytes())
		case !bytes.Equal(readAll(t, out), want):
			t.Fatalf("a restore of big/%s while another process deleted it and collected garbage restored the wrong bytes", id)
		}
		if opened {
			h.readers["restore read its point through delete and GC"]++
		} else {
			h.readers["restore raced delete and GC"]++
		}
		return false
	}

	sockDir, err := os.MkdirTemp("", "kill-nbd-") // short: a socket path has at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	serve := h.child("serve-nbd", "-repo", h.repo, "-collection", "big", "-point", id, "-disk", "d", "-listen", "unix:"+filepath.Join(sockDir, "nbd.sock"))
	var serveErr syncBuffer // written by exec while the export runs
	serve.Stderr = &serveErr
	stdout, err := serve.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		serve.Process.Signal(syscall.SIGKILL) // an export ends when its process is stopped
		serve.Wait()
	}()
	timer := kill(serve)
	defer timer.Stop()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		if killed.Load() {
			return true
		}
		t.Fatalf("serve-nbd of big/%s said nothing: %v: %s", id, err, serveErr.Bytes())
	}
	go io.Copy(io.Discard, stdout)
	url := strings.TrimSpace(line[strings.LastIndex(line, " ")+1:])
	deleteAndGC()
	out := filepath.Join(h.dir, "nbd.img")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	msg, err := exec.CommandContext(ctx, "qemu-img", "convert", "-f", "raw", "-O", "raw", url, out).CombinedOutput()
	if timer.Stop(); killed.Load() {
		return true
	}
	if err != nil {
		t.Fatalf("qemu-img reading big/%s, exported, then deleted and garbage collected by other processes: %v: %s\nserve-nbd said: %s",
			id, err, firstLines(msg, 2), firstLines(serveErr.Bytes(), 2))
	}
	if !bytes.Equal(readAll(t, out), want) {
		t.Fatalf("qemu-img read big/%s, exported, then deleted and garbage collected by other processes, wrong", id)
	}
	h.readers["NBD export read through delete and GC"]++
	return false
}

// firstLines is the first n lines of a child's output: enough to say what
// broke when every read of an export fails alike.
func firstLines(out []byte, n int) string {
	lines := strings.SplitAfter(strings.TrimSpace(string(out)), "\n")
	if len(lines) > n {
		return strings.TrimSpace(strings.Join(lines[:n], "")) + fmt.Sprintf(" (and %d more lines)", len(lines)-n)
	}
	return strings.Join(lines, "")
}

// bigPoint returns the big collection's restore point, creating one (of
// changed bytes, so that it stores new chunks) if there is none.
func (h *harness) bigPoint() string {
	if ids := h.points(h.repo, "big"); len(ids) > 0 {
		return ids[0]
	}
	if _, err := demodisk.Scatter(h.big, 0.1, h.rng.Uint64()); err != nil {
		h.t.Fatal(err)
	}
	image := readAll(h.t, h.big)
	var rp struct{ ID string }
	if err := json.Unmarshal(h.mustChild("create", "-repo", h.repo, "-collection", "big", "-json", "d="+h.big), &rp); err != nil || rp.ID == "" {
		h.t.Fatalf("create of the big point printed nothing useful: %v", err)
	}
	h.expected[h.repo+"|big/"+rp.ID] = map[string][]byte{"d": image}
	return rp.ID
}

// child is the CLI as a child process, not started.
func (h *harness) child(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = childEnv()
	return cmd
}

// mustChild runs the CLI in a child process that must succeed, and returns
// its stdout.
func (h *harness) mustChild(args ...string) []byte {
	h.t.Helper()
	cmd := h.child(args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		h.t.Fatalf("diskpoint %s: %v: %s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

func contains(ids []string, id string) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

func (h *harness) open(dir string) *snapshot.Repository {
	h.t.Helper()
	repo, err := snapshot.Open(context.Background(), dir)
	if err != nil {
		h.t.Fatalf("open %s: %v", dir, err)
	}
	return repo
}

func (h *harness) points(dir, collection string) []string {
	h.t.Helper()
	c, _ := h.open(dir).Collection(collection)
	points, err := c.List(context.Background())
	if err != nil {
		h.t.Fatalf("list %s: %v", collection, err)
	}
	var ids []string
	for _, p := range points {
		ids = append(ids, p.ID)
	}
	return ids
}

// check asserts the harness's promises.
func (h *harness) check(when string) {
	t := h.t
	t.Helper()
	ctx := context.Background()
	for _, dir := range []string{h.repo, h.dr} {
		repo := h.open(dir)
		report, err := repo.Verify(ctx, snapshot.VerifyOptions{})
		if err != nil || !report.OK() {
			t.Fatalf("%s: verify %s: %+v, %v", when, dir, report.Damage, err)
		}
		// Every restore point that exists is one we expect, and restores.
		collections, _ := repo.Collections(ctx)
		for _, name := range collections {
			for _, id := range h.points(dir, name) {
				key := dir + "|" + name + "/" + id
				want := h.expected[key]
				if want == nil {
					t.Fatalf("%s: restore point %s/%s appeared from nowhere", when, name, id)
				}
				if h.checked[key] {
					continue
				}
				h.checked[key] = true
				c, _ := repo.Collection(name)
				for disk, image := range want {
					out := filepath.Join(t.TempDir(), disk)
					if _, err := c.RestoreDisk(ctx, snapshot.RestoreOptions{Point: id, Disk: disk, Path: out}); err != nil {
						t.Fatalf("%s: restore %s/%s disk %s: %v", when, name, id, disk, err)
					}
					if !bytes.Equal(readAll(t, out), image) {
						t.Fatalf("%s: restore point %s/%s disk %s restores the wrong bytes", when, name, id, disk)
					}
					os.Remove(out)
				}
			}
		}
		// The next operation succeeds, and GC leaves nothing behind: no temp
		// files, no locks of dead processes, no unindexed packs.
		if _, err := repo.GC(ctx, snapshot.GCOptions{}); err != nil {
			t.Fatalf("%s: gc %s after a kill: %v", when, dir, err)
		}
		var leftovers []string
		filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() && (strings.HasPrefix(fi.Name(), ".tmp-") || strings.Contains(path, "/locks/")) {
				leftovers = append(leftovers, strings.TrimPrefix(path, dir))
			}
			return nil
		})
		sort.Strings(leftovers)
		if len(leftovers) > 0 {
			t.Fatalf("%s: left behind in %s after GC: %v", when, dir, leftovers)
		}
		if report, _ := repo.Verify(ctx, snapshot.VerifyOptions{}); report.UnindexedPacks != 0 {
			t.Fatalf("%s: %d unindexed packs after GC", when, report.UnindexedPacks)
		}
	}
}
