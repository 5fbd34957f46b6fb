package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
)

// rssLimitKB is target 1's bound on peak RSS: 256 MiB.
const rssLimitKB = 256 << 10

// summary is one step's figures: the median run's times, the largest
// peak RSS of its runs.
type summary struct {
	wall, inProcess time.Duration
	rssKB           int64
	detail          string
	runs            int
}

func summarize(rs []result) summary {
	s := summary{runs: len(rs)}
	walls := make([]time.Duration, len(rs))
	inside := make([]time.Duration, len(rs))
	for i, r := range rs {
		walls[i] = r.wall
		inside[i] = time.Duration(r.report.Seconds * float64(time.Second))
		s.rssKB = max(s.rssKB, r.rssKB)
	}
	slices.Sort(walls)
	slices.Sort(inside)
	s.wall, s.inProcess = walls[len(walls)/2], inside[len(inside)/2]
	s.detail = rs[len(rs)-1].report.Detail
	return s
}

// stepOrder is the order of the table's rows.
var stepOrder = []string{
	stepInit, stepFloor, stepFull, stepIncremental, stepRestore, stepVerify, stepCopy, stepPoints,
	stepOpen, stepList, stepCreateAfterMany, stepCreateAfterOne, stepDelete, stepGC,
}

// renderTable renders the steps and the targets they measure.
func renderTable(p params, results map[string][]result, size repoSize) string {
	var t strings.Builder
	host, _ := os.Hostname()
	var self syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	logical := p.chunks * int64(p.blockSize)
	fmt.Fprintf(&t, "Measured %s on %s (%d CPUs, %s): format %d, block size %s, a generated disk of %s blocks (%s), %s points in the collection of many%s; the one-block creates are the median of %d runs each. Every step is a process of its own (this program itself peaked at %s). After the two creates of the big disk the repository took %s on disk, %s of it index files.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), host, runtime.NumCPU(), runtime.Version(), p.format,
		humanize.IBytes(uint64(p.blockSize)), humanize.Comma(p.chunks), humanize.IBytes(uint64(logical)),
		humanize.Comma(int64(p.points)), pointsStoreNote(p), p.runs, humanize.IBytes(uint64(self.Maxrss)*1024),
		humanize.IBytes(uint64(size.total)), humanize.IBytes(uint64(size.index)))
	fmt.Fprintf(&t, "| step | wall time | in the process | peak RSS | what it did |\n| --- | --- | --- | --- | --- |\n")
	sums := map[string]summary{}
	for _, step := range stepOrder {
		rs, ok := results[step]
		if !ok {
			continue
		}
		s := summarize(rs)
		sums[step] = s
		fmt.Fprintf(&t, "| %s | %.2f s | %.2f s | %s | %s |\n", step, s.wall.Seconds(), s.inProcess.Seconds(), humanize.IBytes(uint64(s.rssKB)*1024), s.detail)
	}

	fmt.Fprintf(&t, "\n| target | measured | met |\n| --- | --- | --- |\n")
	line := func(target, measured, met string) { fmt.Fprintf(&t, "| %s | %s | %s |\n", target, measured, met) }
	row := func(target, measured string, ok bool) {
		if ok {
			line(target, measured, "yes")
		} else {
			line(target, measured, "no")
		}
	}
	for _, step := range []string{stepFull, stepIncremental, stepRestore, stepVerify, stepGC, stepCopy} {
		rss := sums[step].rssKB
		row("1. peak RSS under 256 MiB: "+step, humanize.IBytes(uint64(rss)*1024), rss < rssLimitKB)
	}
	for _, step := range []string{stepOpen, stepList} {
		s := sums[step]
		row("2. "+step+" in less than 1 s", fmt.Sprintf("%.3f s (%.3f s with the process)", s.inProcess.Seconds(), s.wall.Seconds()), s.wall < time.Second)
	}
	many, one := sums[stepCreateAfterMany].inProcess, sums[stepCreateAfterOne].inProcess
	row(fmt.Sprintf("2. a create after %s points within 10%% of one after 1", humanize.Comma(int64(p.points))),
		fmt.Sprintf("%.3f s vs %.3f s: %+.0f%%", many.Seconds(), one.Seconds(), 100*(many.Seconds()/one.Seconds()-1)), float64(many) <= 1.1*float64(one))
	floor, incr := sums[stepFloor].inProcess, sums[stepIncremental].inProcess
	line("3. incremental after a 1% change: its time against reading and hashing the disk",
		fmt.Sprintf("%.2f s vs %.2f s: %.2fx; %.2f s per million chunks", incr.Seconds(), floor.Seconds(), incr.Seconds()/floor.Seconds(),
			incr.Seconds()*1e6/float64(p.chunks)), "compare the ratio across sizes")
	gc := sums[stepGC]
	row("4. gc after deleting half the points: time, in bounded memory", fmt.Sprintf("%.2f s, %s", gc.inProcess.Seconds(), humanize.IBytes(uint64(gc.rssKB)*1024)), gc.rssKB < rssLimitKB)
	return t.String()
}

// The lines every run's table goes between.
const allEndMarker = "<!-- scale:end -->"

func runMarkers(p params) (begin, end string) {
	key := fmt.Sprintf("scale:%d:%d", p.chunks, p.format)
	return "<!-- " + key + ":begin -->", "<!-- " + key + ":end -->"
}

// writeBetweenMarkers puts table between this run's marker lines in path,
// adding them before the scale:end line if path has none yet.
func writeBetweenMarkers(path string, p params, table string) error {
	old, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	begin, end := runMarkers(p)
	block := begin + "\n\n" + table + "\n" + end
	i, j := bytes.Index(old, []byte(begin)), bytes.Index(old, []byte(end))
	var updated []byte
	switch {
	case i >= 0 && j > i:
		updated = slices.Concat(old[:i], []byte(block), old[j+len(end):])
	case i >= 0 || j >= 0:
		return fmt.Errorf("%s has only one of the lines %q and %q", path, begin, end)
	default:
		k := bytes.Index(old, []byte(allEndMarker))
		if k < 0 {
			return fmt.Errorf("%s has no %q line to add this run's table before", path, allEndMarker)
		}
		updated = slices.Concat(old[:k], []byte(block+"\n\n"), old[k:])
	}
	return os.WriteFile(path, updated, 0o644)
}

// repoSize is the space a repository's files take on disk (allocated
// blocks), in all and in its index files.
type repoSize struct{ total, index int64 }

func measureRepo(dir string) repoSize {
	var s repoSize
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			n := fi.Sys().(*syscall.Stat_t).Blocks * 512
			s.total += n
			if rel, _ := filepath.Rel(dir, path); strings.HasPrefix(rel, "index"+string(filepath.Separator)) {
				s.index += n
			}
		}
		return nil
	})
	return s
}

// pointsStoreNote says, in the table, that the points stored a blob each.
func pointsStoreNote(p params) string {
	if p.pointsStore {
		return " (each stored a blob of its own, and so an index file: -points-store)"
	}
	return ""
}
