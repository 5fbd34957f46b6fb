package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/internal/demodisk"
	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal: the controlling side, and the terminal
// side a child writes to.
func openPTY(t *testing.T) (control, term *os.File) {
	t.Helper()
	control, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skip("no pseudo-terminals here:", err)
	}
	if err := unix.IoctlSetPointerInt(int(control.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(control.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	term, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		control.Close()
		t.Skip("cannot open the terminal side:", err)
	}
	return control, term
}

// runOnTerminal runs the CLI as a child whose stderr (or, with
// stdoutTerminal, whose stdout instead) is a terminal; it returns the exit
// status, what went to the terminal, and what went to the other stream.
func runOnTerminal(t *testing.T, stdoutTerminal bool, args ...string) (code int, terminal, other string) {
	t.Helper()
	control, term := openPTY(t)
	defer control.Close()
	var drawn bytes.Buffer
	read := make(chan struct{})
	go func() {
		io.Copy(&drawn, control) // ends with EIO once the terminal side is closed
		close(read)
	}()
	var pipe bytes.Buffer
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "DISKPOINT_TEST_CLI=1")
	if stdoutTerminal {
		cmd.Stdout, cmd.Stderr = term, &pipe
	} else {
		cmd.Stdout, cmd.Stderr = &pipe, term
	}
	err := cmd.Run()
	term.Close()
	<-read
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, drawn.String(), pipe.String()
}

// mustOnTerminal is runOnTerminal (stderr a terminal) that fails the test
// unless the command succeeds; it returns what was drawn on the terminal.
func mustOnTerminal(t *testing.T, args ...string) string {
	t.Helper()
	code, drawn, out := runOnTerminal(t, false, args...)
	if code != 0 {
		t.Fatalf("diskpoint %s: exit %d\nterminal: %q\nstdout: %s", strings.Join(args, " "), code, drawn, out)
	}
	return drawn
}

// Progress is drawn on stderr only when stderr is a terminal, -q silences
// it, and -v leaves a summary line. A create's total counts the disks it
// takes, not the excluded ones; gc, verify, restore and copy draw progress
// too.
func TestCLIProgressOnStderrTerminal(t *testing.T) {
	dir := t.TempDir()
	repo, dr := filepath.Join(dir, "repo"), filepath.Join(dir, "dr")
	mustBinary(t, nil, "init", "-repo", repo)
	mustBinary(t, nil, "init", "-repo", dr)
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	demodisk.Create(a, 3<<20, 1, demodisk.MixedImage)
	demodisk.Create(b, 5<<20, 2, demodisk.MixedImage)

	drawn := mustOnTerminal(t, "create", "-repo", repo, "-collection", "vm", "-exclude", "b", "a="+a, "b="+b)
	if !strings.Contains(drawn, "create vm: ") || !strings.Contains(drawn, "/ 3.0 MiB") {
		t.Errorf("create with stderr a terminal drew %q; want progress out of 3.0 MiB (b is excluded)", drawn)
	}
	// stdout a terminal, stderr piped: no progress anywhere.
	code, onStdout, stderr := runOnTerminal(t, true, "create", "-repo", repo, "-collection", "vm", "a="+a)
	if code != 0 || strings.Contains(stderr, "create vm:") || strings.Contains(onStdout, "create vm:") || strings.Contains(stderr, "\r") {
		t.Errorf("create with only stdout a terminal: exit %d, stderr %q, stdout %q; want no progress", code, stderr, onStdout)
	}
	if drawn := mustOnTerminal(t, "create", "-repo", repo, "-collection", "vm", "-q", "a="+a); strings.Contains(drawn, "create vm:") {
		t.Errorf("create -q drew %q", drawn)
	}
	drawn = mustOnTerminal(t, "create", "-repo", repo, "-collection", "vm", "-v", "a="+a, "b="+b)
	if !strings.Contains(drawn, "/ 8.0 MiB") || !strings.Contains(drawn, "changed") || !strings.Contains(drawn, " in ") || !strings.HasSuffix(strings.TrimRight(drawn, " "), "\n") {
		t.Errorf("create -v drew %q; want the detail (disk, changed) and a summary line kept", drawn)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"verify", "-repo", repo}, "verify: "},
		{[]string{"restore", "-repo", repo, "-collection", "vm", "-point", "latest", "-disk", "a", "-to", filepath.Join(dir, "r.img"), "-force"}, "restore a: "},
		{[]string{"copy", "-repo", repo, "-collection", "vm", "-point", "latest", "-to-repo", dr, "-to-collection", "vm"}, "copy "},
		{[]string{"stats", "-repo", repo}, "stats: "},
		{[]string{"gc", "-repo", repo}, "gc mark: "},
	} {
		if drawn := mustOnTerminal(t, tc.args...); !strings.Contains(drawn, tc.want) {
			t.Errorf("%s with stderr a terminal drew %q; want %q", tc.args[0], drawn, tc.want)
		}
		quiet := append(tc.args, "-q")
		if tc.args[0] == "copy" {
			quiet[len(quiet)-2] = "vm-quiet" // a copy into vm is there already
		}
		if drawn := mustOnTerminal(t, quiet...); strings.Contains(drawn, tc.want) {
			t.Errorf("%s -q drew %q", tc.args[0], drawn)
		}
	}
}

// A block device's progress total is its size (BLKGETSIZE64), not the 0
// that stat reports.
func TestCLIProgressTotalOfABlockDevice(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "d.img")
	demodisk.Create(img, 6<<20, 3, demodisk.MixedImage)
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		t.Skip("no loop devices (needs root and losetup):", err)
	}
	dev := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", dev).Run()
	repo := filepath.Join(dir, "repo")
	mustBinary(t, nil, "init", "-repo", repo)
	drawn := mustOnTerminal(t, "create", "-repo", repo, "-collection", "vm", "d="+dev)
	if !strings.Contains(drawn, "/ 6.0 MiB") {
		t.Errorf("create of block device %s drew %q; want a total of 6.0 MiB", dev, drawn)
	}
}

// A copy's progress ends at the point's logical size even when it moves a
// fraction of it (an incremental point whose parent the target has): what
// it counts is how much of the disks it has dealt with.
func TestCLICopyProgressReachesTheTotal(t *testing.T) {
	dir := t.TempDir()
	repo, dr, img := filepath.Join(dir, "repo"), filepath.Join(dir, "dr"), filepath.Join(dir, "a.img")
	mustBinary(t, nil, "init", "-repo", repo)
	mustBinary(t, nil, "init", "-repo", dr)
	demodisk.Create(img, 4<<20, 1, demodisk.MixedImage)
	mustBinary(t, nil, "create", "-repo", repo, "-collection", "vm", "a="+img)
	mustBinary(t, nil, "copy", "-repo", repo, "-collection", "vm", "-point", "latest", "-to-repo", dr, "-to-collection", "vm")
	if _, err := demodisk.Scatter(img, 0.05, 2); err != nil {
		t.Fatal(err)
	}
	mustBinary(t, nil, "create", "-repo", repo, "-collection", "vm", "a="+img)
	drawn := mustOnTerminal(t, "copy", "-repo", repo, "-collection", "vm", "-point", "latest", "-to-repo", dr, "-to-collection", "vm", "-v")
	if !strings.Contains(drawn, "4.0 MiB / 4.0 MiB") {
		t.Errorf("an incremental copy drew %q; want its progress to end at 4.0 MiB / 4.0 MiB", drawn)
	}
}
