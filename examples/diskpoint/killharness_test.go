package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
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
}

// TestKillAtAnyInstant kills the CLI with SIGKILL at random moments of
// creates, deletes, prunes, copies and GCs, on a fixed seed. After every
// kill: verify is clean (garbage aside), every committed restore point
// restores bit-exact, and the next GC succeeds and leaves no temp files,
// stale locks or unindexed packs behind. -kills sets how many kills
// (default 100); -kill-seed reproduces a run.
func TestKillAtAnyInstant(t *testing.T) {
	if testing.Short() {
		t.Skip("the kill harness takes a while; run without -short")
	}
	h := &harness{t: t, dir: t.TempDir(), expected: map[string]map[string][]byte{},
		rng: rand.New(rand.NewPCG(*killSeed, 7)), kills: map[string]int{}, finished: map[string]int{}, checked: map[string]bool{}}
	h.repo, h.dr = filepath.Join(h.dir, "repo"), filepath.Join(h.dir, "dr")
	mustCLI(t, "init", "-repo", h.repo, "-block-size", "16KiB")
	mustCLI(t, "init", "-repo", h.dr, "-block-size", "16KiB")
	h.disks = map[string]string{"a": filepath.Join(h.dir, "a.img"), "b": filepath.Join(h.dir, "b.img")}
	for i, name := range []string{"a", "b"} {
		if err := demodisk.Create(h.disks[name], 3<<20, uint64(i+1), demodisk.MixedImage); err != nil {
			t.Fatal(err)
		}
	}
	ops := []string{"create", "create", "create", "delete", "prune", "copy", "gc"}
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
	t.Logf("seed %d: %d kills survived (%v); %v finished before their kill", *killSeed, total, h.kills, h.finished)
}

// run prepares op, runs it in a child process, and kills it after delay
// (never, when delay < 0). It reports whether the child was killed, and
// updates the expectations with whatever the op committed.
func (h *harness) run(op string, delay time.Duration) bool {
	t := h.t
	var args []string
	var images map[string][]byte
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
	}
	before := map[string]bool{}
	for _, id := range points {
		before[id] = true
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "DISKPOINT_TEST_CLI=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
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
		report, err := repo.Verify(ctx, chain.VerifyOptions{})
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
					if _, err := c.RestoreDisk(ctx, id, disk, out, snapshot.RestoreOptions{}); err != nil {
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
		if _, err := repo.GC(ctx, chain.GCOptions{}); err != nil {
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
		if report, _ := repo.Verify(ctx, chain.VerifyOptions{}); report.UnindexedPacks != 0 {
			t.Fatalf("%s: %d unindexed packs after GC", when, report.UnindexedPacks)
		}
	}
}
