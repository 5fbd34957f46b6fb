package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/dustin/go-humanize"
	"golang.org/x/sys/unix"
)

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// progressLine draws "what: done / total, rate, ETA" on one terminal line,
// at most ten times a second. A nil *progressLine draws nothing.
type progressLine struct {
	w     io.Writer
	what  string
	start time.Time
	mu    sync.Mutex
	last  time.Time
	drawn bool
}

func newProgress(e *env, quiet bool, what string) *progressLine {
	if quiet || !e.terminal {
		return nil
	}
	return &progressLine{w: e.stderr, what: what, start: time.Now()}
}

func (p *progressLine) update(done, total int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if now.Sub(p.last) < 100*time.Millisecond && done < total {
		return
	}
	p.last = now
	elapsed := now.Sub(p.start).Seconds()
	line := fmt.Sprintf("%s: %s / %s", p.what, humanize.IBytes(uint64(done)), humanize.IBytes(uint64(total)))
	if elapsed > 0.2 && done > 0 {
		rate := float64(done) / elapsed
		line += fmt.Sprintf(", %s/s", humanize.IBytes(uint64(rate)))
		if done < total {
			eta := time.Duration(float64(total-done) / rate * float64(time.Second)).Round(time.Second)
			line += fmt.Sprintf(", ETA %s", eta)
		}
	}
	fmt.Fprintf(p.w, "\r%-78s", line)
	p.drawn = true
}

// done clears the line.
func (p *progressLine) done() {
	if p == nil || !p.drawn {
		return
	}
	fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", 78))
}
