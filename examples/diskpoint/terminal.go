package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/diskpoint/diskpoint/blockdiff"
	"github.com/diskpoint/diskpoint/snapshot"
	"github.com/dustin/go-humanize"
	"golang.org/x/sys/unix"
)

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// addOutputFlags gives a command -q and -v, as restic's global flags:
// -q draws no progress, -v adds detail to it and leaves a summary line.
func addOutputFlags(fs *flag.FlagSet, e *env) {
	fs.BoolVar(&e.quiet, "q", false, "quiet: draw no progress")
	fs.BoolVar(&e.verbose, "v", false, "verbose: more detail in the progress, and a summary line on stderr when done")
}

// progressLine draws "what: done / total, rate, ETA" on one line of
// stderr, at most ten times a second. It is only made when stderr is a
// terminal (stdout may be piped: the progress never mixes with the
// output). A nil *progressLine draws nothing.
type progressLine struct {
	w       io.Writer
	what    string
	verbose bool
	start   time.Time
	mu      sync.Mutex
	last    time.Time
	drawn   bool
	line    string // the last line drawn, without rate
	doneN   int64
	bytes   bool
}

// newProgress returns a progress line for what, or nil when progress is
// not to be drawn: quiet (the command's own reason, such as -json), -q, or
// stderr is not a terminal.
func newProgress(e *env, quiet bool, what string) *progressLine {
	if quiet || e.quiet || !e.terminal {
		return nil
	}
	return &progressLine{w: e.stderr, what: what, start: time.Now(), verbose: e.verbose}
}

// stage starts a new stage of the work, drawn as what: the rate and ETA
// start over.
func (p *progressLine) stage(what string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.what != what {
		p.what, p.start, p.last = what, time.Now(), time.Time{}
	}
}

// update draws done of total bytes.
func (p *progressLine) update(done, total int64) { p.draw(done, total, true, "") }

// updateDetail draws done of total bytes, and with -v the detail.
func (p *progressLine) updateDetail(done, total int64, detail string) {
	p.draw(done, total, true, detail)
}

// updateCount draws done of total things called unit.
func (p *progressLine) updateCount(done, total int64, unit string) {
	p.draw(done, total, false, unit)
}

func (p *progressLine) draw(done, total int64, bytes bool, detail string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if now.Sub(p.last) < 100*time.Millisecond && done < total {
		return
	}
	p.last, p.doneN, p.bytes = now, done, bytes
	elapsed := now.Sub(p.start).Seconds()
	var line string
	if bytes {
		line = fmt.Sprintf("%s: %s / %s", p.what, humanize.IBytes(uint64(done)), humanize.IBytes(uint64(total)))
		if p.verbose && detail != "" {
			line += ", " + detail
		}
	} else {
		line = fmt.Sprintf("%s: %d / %d %s", p.what, done, total, detail)
	}
	p.line = line
	if elapsed > 0.2 && done > 0 {
		rate := float64(done) / elapsed
		if bytes {
			line += fmt.Sprintf(", %s/s", humanize.IBytes(uint64(rate)))
		}
		if done < total {
			eta := time.Duration(float64(total-done) / rate * float64(time.Second)).Round(time.Second)
			line += fmt.Sprintf(", ETA %s", eta)
		}
	}
	fmt.Fprintf(p.w, "\r%-78s", line)
	p.drawn = true
}

// done clears the line; with -v it leaves a summary of the last state and
// how long it took instead.
func (p *progressLine) done() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.verbose {
		elapsed := time.Since(p.start)
		summary := fmt.Sprintf("%s: done in %s", p.what, elapsed.Round(time.Millisecond))
		if p.line != "" {
			summary = p.line + " in " + elapsed.Round(time.Millisecond).String()
			if p.bytes && elapsed > 0 {
				summary += fmt.Sprintf(", %s/s", humanize.IBytes(uint64(float64(p.doneN)/elapsed.Seconds())))
			}
		}
		fmt.Fprintf(p.w, "\r%-78s\n", summary)
		return
	}
	if p.drawn {
		fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", 78))
	}
}

// diskTotal is the size of the disk at path: a block device's real size
// (BLKGETSIZE64), not the 0 that stat reports for it; 0 if it cannot be
// opened (the create then fails and says why).
func diskTotal(ctx context.Context, path string) int64 {
	d, err := blockdiff.OpenDisk(ctx, path)
	if err != nil {
		return 0
	}
	defer d.Close()
	return d.Size
}

// createProgress draws a create's progress: the bytes scanned of the disks
// it takes (excluded ones are not counted), and with -v the disk being
// read and what changed so far.
func createProgress(ctx context.Context, progress *progressLine, opts *snapshot.CreateOptions) {
	if progress == nil {
		return
	}
	excluded := map[string]bool{}
	for _, name := range opts.Exclude {
		excluded[name] = true
	}
	var total int64
	for _, d := range opts.Disks {
		if !excluded[d.Name] {
			total += diskTotal(ctx, d.Path)
		}
	}
	var mu sync.Mutex
	scanned, changed := map[string]int64{}, map[string]int64{}
	opts.Progress = func(p snapshot.Progress) {
		mu.Lock()
		defer mu.Unlock()
		scanned[p.Disk], changed[p.Disk] = p.Scan.Scanned, p.Scan.ChangedBytes
		var done, diff int64
		for name, n := range scanned {
			done += n
			diff += changed[name]
		}
		progress.updateDetail(done, total, fmt.Sprintf("disk %s, %s changed", p.Disk, humanize.IBytes(uint64(diff))))
	}
}
