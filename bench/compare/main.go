// Command compare measures diskpoint side by side with restic, borg and
// casync on one generated disk image, with cat, b3sum, zstd and cp as
// floors, and prints one table of wall time, peak RSS and stored bytes per
// step, with the ratios the performance targets are stated in.
//
//	go run ./bench/compare -size 2GiB -out bench/RESULTS.md
//
// The peers come from Debian: apt-get install restic borgbackup casync b3sum
// zstd. A peer that is not installed is left out. The image is the mixed
// image (30% holes, 30% text, 25% random, 15% repeated runs; seed 1), and the
// change rewrites 1% of it in scattered 4-64 KiB writes (seed 2). Before
// each step, dirty pages are written back and the image is read into the
// page cache. Timings on a shared machine are noisy:
// compare ratios within one run, not absolute times across runs.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/dustin/go-humanize"
)

type result struct {
	tool, step string
	wall       time.Duration
	rssKB      int64
	stored     int64 // bytes; -1 when not applicable
}

type bench struct {
	work    string
	image   string
	results []result
	log     *os.File
}

func main() {
	sizeFlag := flag.String("size", "2GiB", "image size")
	out := flag.String("out", "", "also write the table to this file")
	work := flag.String("work", "", "working directory (default: a new one under /var/tmp, removed after)")
	flag.Parse()
	size, err := humanize.ParseBytes(*sizeFlag)
	if err != nil {
		fail(err)
	}
	b := &bench{work: *work, log: os.Stderr}
	if b.work == "" {
		if b.work, err = os.MkdirTemp("/var/tmp", "diskpoint-compare-"); err != nil {
			fail(err)
		}
		defer os.RemoveAll(b.work)
	}
	b.image = filepath.Join(b.work, "disk.img")
	fmt.Fprintf(b.log, "generating a %s mixed image in %s\n", humanize.IBytes(size), b.work)
	if err := demodisk.Create(b.image, int64(size), 1, demodisk.MixedImage); err != nil {
		fail(err)
	}
	cli := filepath.Join(b.work, "diskpoint")
	b.must("go", "build", "-o", cli, "./examples/diskpoint")

	// Floors.
	b.step("cat", "read", -1, "sh", "-c", "cat "+b.image+" > /dev/null")
	if have("b3sum") {
		b.step("b3sum", "hash (2 threads)", -1, "b3sum", "--num-threads", "2", b.image)
		b.step("b3sum", "hash (1 thread)", -1, "b3sum", "--num-threads", "1", b.image)
	}
	if have("zstd") {
		zst := filepath.Join(b.work, "disk.zst")
		b.step("zstd -1 -T2", "compress", 0, "zstd", "-q", "-1", "-T2", "-f", b.image, "-o", zst)
		b.last().stored = fileSize(zst)
		os.Remove(zst)
	}
	cpOut := filepath.Join(b.work, "cp.img")
	b.step("cp --sparse=always", "copy", -1, "cp", "--sparse=always", b.image, cpOut)
	os.Remove(cpOut)

	// The image before and after the change, saved so every tool sees the same.
	before := filepath.Join(b.work, "before.img")
	b.must("cp", "--sparse=always", b.image, before)
	ranges, err := demodisk.Scatter(b.image, 0.01, 2)
	if err != nil {
		fail(err)
	}
	after := filepath.Join(b.work, "after.img")
	b.must("cp", "--sparse=always", b.image, after)
	var written int64
	var rangesText bytes.Buffer
	for _, r := range ranges {
		written += r.Length
		fmt.Fprintf(&rangesText, "%d %d\n", r.Offset, r.Length)
	}
	rangesFile := filepath.Join(b.work, "changed.ranges")
	os.WriteFile(rangesFile, rangesText.Bytes(), 0o600)
	use := func(version string) { b.must("cp", "--sparse=always", version, b.image) }

	// diskpoint.
	repo := filepath.Join(b.work, "dp-repo")
	b.must(cli, "init", "-repo", repo)
	use(before)
	b.tool("diskpoint", "first backup", repo, cli, "create", "-repo", repo, "-collection", "vm", "-json", "d="+b.image)
	use(after)
	b.tool("diskpoint", "after 1% change", repo, cli, "create", "-repo", repo, "-collection", "vm", "-json", "d="+b.image)
	latest := strings.TrimSpace(b.output(cli, "list", "-repo", repo, "-collection", "vm", "-json"))
	ids := idsOf(latest)
	b.must(cli, "delete", "-repo", repo, "-collection", "vm", "-point", ids[len(ids)-1])
	b.must(cli, "gc", "-repo", repo)
	b.tool("diskpoint", "after 1% change, changed-range list", repo, cli, "create", "-repo", repo, "-collection", "vm", "-changed", "d="+rangesFile, "d="+b.image)
	restored := filepath.Join(b.work, "restored.img")
	b.step("diskpoint", "restore", -1, cli, "restore", "-repo", repo, "-collection", "vm", "-point", "latest", "-disk", "d", "-to", restored)
	b.check(restored, after)

	if have("restic") {
		r := filepath.Join(b.work, "restic-repo")
		os.Setenv("RESTIC_PASSWORD", "compare")
		b.must("restic", "init", "--repo", r)
		use(before)
		b.tool("restic", "first backup", r, "restic", "-q", "--repo", r, "backup", b.image)
		use(after)
		b.tool("restic", "after 1% change", r, "restic", "-q", "--repo", r, "backup", b.image)
		target := filepath.Join(b.work, "restic-restore")
		b.step("restic", "restore", -1, "restic", "-q", "--repo", r, "restore", "latest", "--target", target)
		b.check(filepath.Join(target, b.image), after)
		os.RemoveAll(target)
		os.RemoveAll(r)
	}
	if have("borg") {
		r := filepath.Join(b.work, "borg-repo")
		os.Setenv("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes")
		b.must("borg", "init", "-e", "none", r)
		use(before)
		b.tool("borg", "first backup", r, "borg", "create", r+"::a", b.image)
		use(after)
		b.tool("borg", "after 1% change", r, "borg", "create", r+"::b", b.image)
		target := filepath.Join(b.work, "borg-restore")
		os.MkdirAll(target, 0o700)
		b.stepIn(target, "borg", "restore (--sparse)", "borg", "extract", "--sparse", r+"::b")
		b.check(filepath.Join(target, b.image), after)
		os.RemoveAll(target)
		os.RemoveAll(r)
	}
	if have("casync") {
		store := filepath.Join(b.work, "casync-store")
		use(before)
		b.tool("casync", "first backup", store, "casync", "make", "--store="+store, filepath.Join(b.work, "a.caibx"), b.image)
		use(after)
		b.tool("casync", "after 1% change", store, "casync", "make", "--store="+store, filepath.Join(b.work, "b.caibx"), b.image)
		out := filepath.Join(b.work, "casync.img")
		b.step("casync", "restore", -1, "casync", "extract", "--store="+store, filepath.Join(b.work, "b.caibx"), out)
		b.check(out, after)
		os.Remove(out)
		os.RemoveAll(store)
	}
	table := b.table(int64(size), written)
	fmt.Print(table)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(table), 0o644); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "compare:", err)
	os.Exit(1)
}

func have(cmd string) bool { _, err := exec.LookPath(cmd); return err == nil }

func (b *bench) must(name string, args ...string) {
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = b.log, b.log
	if err := cmd.Run(); err != nil {
		fail(fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err))
	}
}

func (b *bench) output(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		fail(fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err))
	}
	return string(out)
}

// warm starts every step alike: nothing left for the kernel to write back
// from the step before (a backlog of dirty pages throttles whoever writes
// next), and the image in the page cache.
func (b *bench) warm() {
	exec.Command("sync").Run()
	exec.Command("sh", "-c", "cat "+b.image+" > /dev/null").Run()
}

func (b *bench) step(tool, step string, stored int64, name string, args ...string) {
	b.stepIn("", tool, step, name, args...)
	b.last().stored = stored
}

// stepIn runs one timed step in dir, recording its wall time and peak RSS.
func (b *bench) stepIn(dir, tool, step, name string, args ...string) {
	b.warm()
	fmt.Fprintf(b.log, "%s: %s\n", tool, step)
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = nil, b.log
	start := time.Now()
	if err := cmd.Run(); err != nil {
		fail(fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err))
	}
	wall := time.Since(start)
	rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss
	b.results = append(b.results, result{tool: tool, step: step, wall: wall, rssKB: rss, stored: -1})
}

// tool runs a backup step and records how much the repository grew.
func (b *bench) tool(tool, step, repo string, name string, args ...string) {
	before := diskUsage(repo)
	b.stepIn("", tool, step, name, args...)
	b.last().stored = diskUsage(repo) - before
}

func (b *bench) last() *result { return &b.results[len(b.results)-1] }

func (b *bench) check(restored, want string) {
	if err := exec.Command("cmp", "-s", restored, want).Run(); err != nil {
		fail(fmt.Errorf("%s restored %s differently", b.last().tool, restored))
	}
}

// diskUsage is the space a directory's files take (allocated blocks).
func diskUsage(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			n += fi.Sys().(*syscall.Stat_t).Blocks * 512
		}
		return nil
	})
	return n
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return fi.Size()
}

func idsOf(listJSON string) []string {
	var ids []string
	for _, part := range strings.Split(listJSON, `"id": "`)[1:] {
		ids = append(ids, part[:strings.Index(part, `"`)])
	}
	return ids
}

// table renders the results and the ratios the targets are stated in.
func (b *bench) table(size, written int64) string {
	var t strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&t, "Measured %s on %s (%d CPUs, %s), image %s, change %s in scattered 4-64 KiB writes.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), host, runtime.NumCPU(), runtime.Version(), humanize.IBytes(uint64(size)), humanize.Bytes(uint64(written)))
	fmt.Fprintf(&t, "| tool | step | wall time | peak RSS | stored |\n| --- | --- | --- | --- | --- |\n")
	find := map[string]result{}
	for _, r := range b.results {
		find[r.tool+"|"+r.step] = r
		stored := "-"
		if r.stored >= 0 {
			stored = humanize.Bytes(uint64(r.stored))
		}
		fmt.Fprintf(&t, "| %s | %s | %.2f s | %s | %s |\n", r.tool, r.step, r.wall.Seconds(), humanize.IBytes(uint64(r.rssKB)*1024), stored)
	}
	wall := func(key string) float64 { return find[key].wall.Seconds() }
	fastestPeer := func(step string) (string, float64) {
		best, name := 0.0, ""
		for _, peer := range []string{"restic", "borg", "casync"} {
			for _, k := range []string{peer + "|" + step, peer + "|" + step + " (--sparse)"} {
				if r, ok := find[k]; ok && (name == "" || r.wall.Seconds() < best) {
					best, name = r.wall.Seconds(), peer
				}
			}
		}
		return name, best
	}
	fmt.Fprintf(&t, "\n| target | measured | met |\n| --- | --- | --- |\n")
	row := func(target, measured string, ok bool) {
		mark := "no"
		if ok {
			mark = "yes"
		}
		fmt.Fprintf(&t, "| %s | %s | %s |\n", target, measured, mark)
	}
	incr := wall("diskpoint|after 1% change")
	if b3 := wall("b3sum|hash (2 threads)"); b3 > 0 {
		row("1. incremental after 1% change <= 1.5x b3sum", fmt.Sprintf("%.2fx b3sum", incr/b3), incr <= 1.5*b3)
	}
	if peer, t := fastestPeer("after 1% change"); peer != "" {
		row("1. ... and >= 8x faster than the fastest peer", fmt.Sprintf("%.1fx faster than %s", t/incr, peer), t >= 8*incr)
	}
	ranged := wall("diskpoint|after 1% change, changed-range list")
	row("2. changed-range incremental <= 10% of hashing", fmt.Sprintf("%.0f%%", 100*ranged/incr), ranged <= 0.1*incr)
	st := find["diskpoint|after 1% change"].stored
	row("3. stored by the change < 2x written", fmt.Sprintf("%.2fx (%s for %s)", float64(st)/float64(written), humanize.Bytes(uint64(st)), humanize.Bytes(uint64(written))), float64(st) < 2*float64(written))
	if cs, ok := find["casync|after 1% change"]; ok {
		row("3. ... and less than casync stores", fmt.Sprintf("%s vs %s", humanize.Bytes(uint64(st)), humanize.Bytes(uint64(cs.stored))), st < cs.stored)
	}
	full := wall("diskpoint|first backup")
	if peer, t := fastestPeer("first backup"); peer != "" {
		row("4. first backup >= 4x faster than the fastest peer", fmt.Sprintf("%.1fx faster than %s", t/full, peer), t >= 4*full)
	}
	if z, ok := find["zstd -1 -T2|compress"]; ok {
		fs := find["diskpoint|first backup"].stored
		row("4. ... stored no larger than zstd -1", fmt.Sprintf("%s vs %s", humanize.Bytes(uint64(fs)), humanize.Bytes(uint64(z.stored))), fs <= z.stored)
	}
	rest := wall("diskpoint|restore")
	if peer, t := fastestPeer("restore"); peer != "" {
		row("5. restore >= 4x faster than the fastest peer", fmt.Sprintf("%.1fx faster than %s", t/rest, peer), t >= 4*rest)
	}
	if cp := wall("cp --sparse=always|copy"); cp > 0 {
		row("5. ... within 1.5x of cp --sparse=always", fmt.Sprintf("%.2fx cp", rest/cp), rest <= 1.5*cp)
	}
	var rss int64
	for _, r := range b.results {
		if r.tool == "diskpoint" {
			rss = max(rss, r.rssKB)
		}
	}
	row("6. peak RSS under 256 MiB", humanize.IBytes(uint64(rss)*1024), rss < 256<<10)
	return t.String()
}
