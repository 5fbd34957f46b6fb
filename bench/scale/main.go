// Command scale measures diskpoint on repositories of millions of chunks,
// built from generated disks (internal/synthdisk) that exist only as they
// are read: issue 12's targets 1-4. Each step runs in a child process of
// its own, which reports its peak RSS (ru_maxrss) and wall time:
//
//	go run ./bench/scale -chunks 1000000 -block-size 16KiB [-format 1|2] [-points 10000] [-points-store] [-out bench/RESULTS.md]
//
// The steps, on one repository: a full create of a disk of -chunks blocks
// (collection "vm", disk "d"); an incremental create after 1% of its blocks
// changed; a restore of a 1 GiB range of the newest point (OpenDisk and
// ReadAt, checked byte for byte against the generated disk); verify
// -structure-only; a copy of the newest point into a fresh repository;
// opening the repository, and listing a collection of -points restore
// points; a create of a one-block disk in that collection against one in a
// collection with a single point; deleting half of every collection's
// points; and gc.
//
// The -points restore points are built cheaply, and said so: the first is
// a real create of a one-block disk, the others are copies of its manifest
// saved through the library (chain.Writer.SaveManifest), each with a new
// ID and time and the one before as its parent. That is what that many
// creates of the unchanged disk write, byte for byte, except the times,
// and SaveManifest keeps the collection's heads record as a create's does;
// making them by create would take a create each (and before heads
// records, O(points²) manifest reads). With -points-store, each copied point
// also stores a small blob of its own (its VM configuration) and is
// flushed with it, so that it leaves a pack and an index file, as a create
// that changed anything does: the index files of many creates pile up
// between GCs, which a create after them must cope with.
//
// With -out FILE, the table replaces what lies between the lines
// "<!-- scale:CHUNKS:FORMAT:begin -->" and "<!-- scale:CHUNKS:FORMAT:end -->"
// in FILE; when FILE has no such lines, they are added just before its
// "<!-- scale:end -->" line, so that runs of several sizes stand side by
// side.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
)

// params are what the parent and every child agree on.
type params struct {
	work      string
	chunks    int64
	blockSize int
	format    int
	points    int
	runs      int
	// pointsStore: each copied point also stores a blob of its own, so
	// that it leaves an index file, as a create that changed anything does.
	pointsStore bool
}

// args are the flags that hand params to a child.
func (p params) args() []string {
	return []string{
		"-work", p.work, "-chunks", fmt.Sprint(p.chunks), "-block-size", fmt.Sprint(p.blockSize),
		"-format", fmt.Sprint(p.format), "-points", fmt.Sprint(p.points),
		"-points-store=" + fmt.Sprint(p.pointsStore),
	}
}

func (p params) repo() string     { return filepath.Join(p.work, "repo") }
func (p params) copyRepo() string { return filepath.Join(p.work, "copy") }

func main() {
	var p params
	flag.StringVar(&p.work, "work", "", "working directory, for the repositories \"repo\" and \"copy\", made anew (default: a new one under /var/tmp, removed after)")
	flag.Int64Var(&p.chunks, "chunks", 1_000_000, "blocks of the generated disk: the repository's chunks")
	blockSize := flag.String("block-size", "16KiB", "the repository's block size")
	flag.IntVar(&p.format, "format", 1, "repository format version")
	flag.IntVar(&p.points, "points", 10_000, "restore points in the collection that open, list and create are measured against")
	flag.BoolVar(&p.pointsStore, "points-store", false, "each of the -points restore points also stores a small blob of its own (its VM configuration), so that each leaves a pack and an index file, as a create that changed anything does")
	flag.IntVar(&p.runs, "runs", 3, "run the one-block creates this many times each; the table shows medians")
	out := flag.String("out", "", "also write the table into this file, between its scale markers")
	step := flag.String("step", "", "(internal) run one step and print its result")
	flag.Parse()
	bs, err := humanize.ParseBytes(*blockSize)
	if err != nil {
		fail(fmt.Errorf("-block-size %q: %w", *blockSize, err))
	}
	p.blockSize = int(bs)
	if *step != "" {
		runChild(p, *step)
		return
	}
	switch {
	case p.chunks < 1:
		fail(errors.New("-chunks must be at least 1"))
	case p.points < 2:
		fail(errors.New("-points must be at least 2"))
	case p.runs < 1:
		fail(errors.New("-runs must be at least 1"))
	}
	if _, err := initOptions(p); err != nil {
		fail(err)
	}
	if p.work == "" {
		if p.work, err = os.MkdirTemp("/var/tmp", "diskpoint-scale-"); err != nil {
			fail(err)
		}
		defer os.RemoveAll(p.work)
	}
	// A run starts with new repositories, in a -work used before too.
	for _, dir := range []string{p.repo(), p.copyRepo()} {
		if err := os.RemoveAll(dir); err != nil {
			fail(err)
		}
	}
	results, size := measure(p)
	table := renderTable(p, results, size)
	fmt.Print(table)
	if *out != "" {
		if err := writeBetweenMarkers(*out, p, table); err != nil {
			fail(err)
		}
	}
}

// result is one step as the parent saw it, with what the child reported.
type result struct {
	step   string
	wall   time.Duration // the child process, start to exit
	rssKB  int64         // the child's ru_maxrss
	report childReport
}

// childReport is what a child prints: the time its step took inside the
// process (without starting it) and what it did.
type childReport struct {
	Seconds float64 `json:"seconds"`
	Detail  string  `json:"detail"`
}

// run runs one step in a child process.
func run(p params, step string) result {
	self, err := os.Executable()
	if err != nil {
		fail(err)
	}
	// Nothing the kernel still has to write back from the step before may
	// slow this one down.
	exec.Command("sync").Run()
	fmt.Fprintf(os.Stderr, "scale: %s\n", step)
	cmd := exec.Command(self, append(p.args(), "-step", step)...)
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		fail(fmt.Errorf("step %s: %w", step, err))
	}
	r := result{step: step, wall: time.Since(start), rssKB: cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss}
	if err := json.Unmarshal(stdout.Bytes(), &r.report); err != nil {
		fail(fmt.Errorf("step %s printed %q: %w", step, stdout.String(), err))
	}
	// Each step's figures as it ends, so that a long run stopped early
	// still leaves the figures of the steps it finished.
	fmt.Fprintf(os.Stderr, "scale: %s: %.2f s wall, %.2f s in the process, peak RSS %d KiB; %s\n",
		step, r.wall.Seconds(), r.report.Seconds, r.rssKB, r.report.Detail)
	return r
}

// measure runs every step in order, and measures the repository once the
// big disk's two points are in. The one-block creates alternate, so that
// the machine's drift touches both alike.
func measure(p params) (map[string][]result, repoSize) {
	all := map[string][]result{}
	add := func(r result) { all[r.step] = append(all[r.step], r) }
	for _, s := range []string{stepInit, stepFloor, stepFull, stepIncremental} {
		add(run(p, s))
	}
	size := measureRepo(p.repo())
	for _, s := range []string{stepRestore, stepVerify, stepCopy, stepPoints, stepOpen, stepList} {
		add(run(p, s))
	}
	for range p.runs {
		add(run(p, stepCreateAfterMany))
		add(run(p, stepCreateAfterOne))
	}
	add(run(p, stepDelete))
	add(run(p, stepGC))
	return all, size
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "scale:", err)
	os.Exit(1)
}
