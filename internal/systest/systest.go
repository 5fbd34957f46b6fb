// Package systest sets up real kernel objects for tests: loop devices, file
// systems, mounts. Tests that need them call Require first: without root or
// the tools it skips with a message saying what is missing, except in CI
// (CI=true), where the machine is set up for them and a skip would hide a
// test that did not run, so it fails instead.
package systest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Require skips (or in CI fails) the test unless it runs as root with loop
// devices and the named commands.
func Require(t testing.TB, commands ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		missing = append(missing, "loop devices (/dev/loop-control)")
	}
	for _, c := range append([]string{"losetup", "mount", "umount"}, commands...) {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "needs " + strings.Join(missing, ", ") + " (run as root; .ci/run installs the tools)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Run runs a command, fails the test if it fails, and returns its standard
// output (warnings on standard error are not mixed in).
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return string(bytes.TrimSpace(out))
}

// Sparse creates a sparse file of size bytes.
func Sparse(t testing.TB, path string, size int64) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return path
}

// Loop attaches file to a loop device, detached when the test ends.
func Loop(t testing.TB, file string) string {
	t.Helper()
	dev := Run(t, "losetup", "--find", "--show", file)
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// Mount mounts source at a new directory and unmounts it when the test ends.
func Mount(t testing.TB, source string, options ...string) string {
	t.Helper()
	dir := t.TempDir()
	args := append(options, source, dir)
	Run(t, "mount", args...)
	t.Cleanup(func() {
		// Thaw first, in case a failing test left it frozen.
		exec.Command("fsfreeze", "-u", dir).Run()
		if err := exec.Command("umount", dir).Run(); err != nil {
			exec.Command("umount", "-l", dir).Run()
		}
	})
	return dir
}

// FileSystem makes a file system of type fstype in a sparse file of size
// bytes under dir, mounts it through a loop device, and returns the device
// and the mount point.
func FileSystem(t testing.TB, dir, fstype string, size int64) (dev, mnt string) {
	t.Helper()
	image := Sparse(t, filepath.Join(dir, fstype+".img"), size)
	dev = Loop(t, image)
	Run(t, "mkfs."+fstype, "-q", dev)
	return dev, Mount(t, dev)
}

// RequireFUSE skips (or in CI fails) a test that mounts a FUSE file system
// unless it runs as root with /dev/fuse.
func RequireFUSE(t testing.TB) {
	t.Helper()
	reason := ""
	if os.Geteuid() != 0 {
		reason = "not root"
	} else if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err != nil {
		reason = "/dev/fuse: " + err.Error()
	} else {
		f.Close()
	}
	if reason == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("mounting FUSE needs root and /dev/fuse, and CI has them: %s", reason)
	}
	t.Skipf("skipped: mounting FUSE needs root and /dev/fuse: %s", reason)
}

// RequireTool skips (or in CI fails) the test unless the program tool is
// on PATH; pkg is the Debian package that has it, which .ci/run installs.
func RequireTool(t testing.TB, tool, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing (.ci/run installs %s)", tool, pkg)
		}
		t.Skipf("skipped: needs %s (apt-get install %s)", tool, pkg)
	}
}

// IsMountPoint reports whether dir is a mount point now: a mount point in
// /proc/self/mountinfo.
func IsMountPoint(t testing.TB, dir string) bool {
	t.Helper()
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(info), "\n") {
		if fields := strings.Fields(line); len(fields) > 4 && fields[4] == dir {
			return true
		}
	}
	return false
}

// StartDaemon runs a server that writes pidFile once it accepts
// connections (qemu-nbd --pid-file, nbdkit -f -P), in the foreground, and
// returns once pidFile exists; the server is stopped when the test ends.
// (A server forking into the background may write its pid file in the
// child, after the parent has exited: a test reading it then may find none.)
func StartDaemon(t testing.TB, pidFile, name string, args ...string) {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-exited
	})
	ready := time.NewTimer(30 * time.Second)
	defer ready.Stop()
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for {
		if _, err := os.Stat(pidFile); err == nil {
			return
		}
		select {
		case <-exited:
			t.Fatalf("%s exited before it was ready: %v: %s", name, waitErr, stderr.Bytes())
		case <-ready.C:
			t.Fatalf("%s wrote no pid file in 30 s: %s", name, stderr.Bytes())
		case <-poll.C:
		}
	}
}
