package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/internal/systest"
	"golang.org/x/sys/unix"
)

// mountCLI is diskpoint mount running as a child process.
type mountCLI struct {
	cmd    *exec.Cmd
	dir    string
	first  string        // what it printed once mounted
	out    *bufio.Reader // the rest of its stdout
	stderr bytes.Buffer
}

// startMount runs diskpoint mount of repo on a new directory and returns
// once it has mounted. At the test's end it is stopped if it still runs.
func startMount(t *testing.T, repo string) *mountCLI {
	t.Helper()
	systest.RequireFUSE(t)
	m := &mountCLI{dir: t.TempDir()}
	m.cmd = exec.Command(os.Args[0], "mount", "-repo", repo, m.dir)
	m.cmd.Env = append(os.Environ(), "DISKPOINT_TEST_CLI=1")
	m.cmd.Stderr = &m.stderr
	stdout, err := m.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if m.cmd.ProcessState == nil {
			m.cmd.Process.Kill()
			m.cmd.Wait()
		}
		if systest.IsMountPoint(t, m.dir) { // a failed test's: leave no dead mount behind
			unix.Unmount(m.dir, unix.MNT_DETACH)
		}
	})
	m.out = bufio.NewReader(stdout)
	if m.first, err = m.out.ReadString('\n'); err != nil || !strings.HasPrefix(m.first, "mounted ") {
		m.cmd.Wait()
		t.Fatalf("diskpoint mount printed %q (%v), stderr %s", m.first, err, m.stderr.String())
	}
	return m
}

// wait waits for the mount to exit and returns its status and the rest of
// its output.
func (m *mountCLI) wait(t *testing.T) (int, string) {
	t.Helper()
	rest, _ := io.ReadAll(m.out)
	err := m.cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), string(rest) + m.stderr.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(rest) + m.stderr.String()
}

// cmpFiles runs cmp(1) on two files.
func cmpFiles(t *testing.T, a, b string) {
	t.Helper()
	if out, err := exec.Command("cmp", a, b).CombinedOutput(); err != nil {
		t.Errorf("cmp %s %s: %v: %s", a, b, err, out)
	}
}

// diskpoint mount shows each restore point's disk as a file identical to
// the disk (cmp), with its holes findable by SEEK_HOLE, and keeps serving
// every point it shows while another process deletes them and runs GC.
func TestCLIMountReadsPointsWhileGCRuns(t *testing.T) {
	systest.RequireFUSE(t)
	dir := t.TempDir()
	repo, img := filepath.Join(dir, "repo"), filepath.Join(dir, "os.img")
	mustBinary(t, nil, "init", "-repo", repo)
	if err := demodisk.Create(img, 8<<20, 11, demodisk.MixedImage); err != nil {
		t.Fatal(err)
	}
	images := map[string][]byte{}
	var ids []string
	for i := range 2 {
		if i == 1 {
			if _, err := demodisk.Scatter(img, 0.2, 12); err != nil {
				t.Fatal(err)
			}
		}
		out := mustBinary(t, nil, "create", "-repo", repo, "-collection", "vm", "-json", "os="+img)
		id := pointID(t, out)
		ids = append(ids, id)
		images[id], _ = os.ReadFile(img)
		os.WriteFile(filepath.Join(dir, id+".img"), images[id], 0o600)
	}
	other := filepath.Join(dir, "other.img")
	if err := demodisk.Create(other, 2<<20, 13, demodisk.Mix{Random: 1}); err != nil {
		t.Fatal(err)
	}
	otherID := pointID(t, mustBinary(t, nil, "create", "-repo", repo, "-collection", "other", "-json", "data="+other))

	m := startMount(t, repo)
	if !strings.Contains(m.first, "mounted 3 restore points") {
		t.Errorf("mount said %q; want it to count 3 restore points", m.first)
	}
	first := filepath.Join(m.dir, "vm", ids[0], "os.img")
	cmpFiles(t, first, filepath.Join(dir, ids[0]+".img"))
	if target, err := os.Readlink(filepath.Join(m.dir, "vm", "latest")); err != nil || target != ids[1] {
		t.Errorf("vm/latest -> %q (%v), want %s", target, err, ids[1])
	}

	// SEEK_HOLE finds the first all-zero block (of the default 64 KiB).
	f, err := os.Open(first)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const blockSize = 64 << 10
	wantHole := int64(len(images[ids[0]]))
	for off := int64(0); off < int64(len(images[ids[0]])); off += blockSize {
		if !bytes.ContainsFunc(images[ids[0]][off:off+blockSize], func(r rune) bool { return r != 0 }) {
			wantHole = off
			break
		}
	}
	if wantHole == int64(len(images[ids[0]])) {
		t.Fatal("the test disk has no hole")
	}
	if hole, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE); err != nil || hole != wantHole {
		t.Errorf("lseek(0, SEEK_HOLE) = %d, %v; want %d, the first zero block", hole, err, wantHole)
	}

	// Another process deletes every point and collects the garbage while
	// the second point, not yet read, is open; it still reads whole.
	second, err := os.Open(filepath.Join(m.dir, "vm", ids[1], "os.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	head := make([]byte, 1<<20)
	if _, err := io.ReadFull(second, head); err != nil {
		t.Fatal(err)
	}
	for _, p := range [][2]string{{"vm", ids[0]}, {"vm", ids[1]}, {"other", otherID}} {
		mustBinary(t, nil, "delete", "-repo", repo, "-collection", p[0], "-point", p[1])
	}
	gcOut := mustBinary(t, nil, "gc", "-repo", repo)
	rest, err := io.ReadAll(second)
	if err != nil {
		t.Fatalf("reading the second point after gc (%s): %v; mount: %s", strings.TrimSpace(gcOut), err, m.stderr.String())
	}
	if !bytes.Equal(append(head, rest...), images[ids[1]]) {
		t.Error("the second point read after gc differs from its disk")
	}
	cmpFiles(t, filepath.Join(m.dir, "other", otherID, "data.img"), other)

	// SIGTERM unmounts, even with a file open (lazily: it ends when the
	// file is closed), and the command exits 0.
	m.cmd.Process.Signal(syscall.SIGTERM)
	line, err := m.out.ReadString('\n')
	if err != nil || !strings.Contains(line, "detached") {
		t.Errorf("after SIGTERM with files open, mount said %q (%v); want it to detach", line, err)
	}
	if systest.IsMountPoint(t, m.dir) {
		t.Errorf("%s is still mounted after SIGTERM", m.dir)
	}
	f.Close()
	second.Close()
	if code, out := m.wait(t); code != 0 || !strings.Contains(out, "unmounted") {
		t.Errorf("mount after SIGTERM: exit %d, %s; want 0, unmounted", code, out)
	}
	// The mount's reader lock went with it.
	if locks, err := os.ReadDir(filepath.Join(repo, "locks")); err != nil || len(locks) != 0 {
		t.Errorf("locks left after the mount ended: %v (%v)", locks, err)
	}
}

// pointID is the id field of a restore point printed as JSON.
func pointID(t *testing.T, out string) string {
	t.Helper()
	var rp struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(out), &rp); err != nil || rp.ID == "" {
		t.Fatalf("no restore point ID in %q: %v", out, err)
	}
	return rp.ID
}

// The mount ends cleanly when it is unmounted from outside with
// fusermount3 -u, and on SIGINT with nothing open.
func TestCLIMountEndsOnFusermountAndSIGINT(t *testing.T) {
	systest.RequireFUSE(t)
	systest.RequireTool(t, "fusermount3", "fuse3")
	dir := t.TempDir()
	repo, img := filepath.Join(dir, "repo"), filepath.Join(dir, "d.img")
	mustBinary(t, nil, "init", "-repo", repo)
	if err := demodisk.Create(img, 1<<20, 3, demodisk.MixedImage); err != nil {
		t.Fatal(err)
	}
	mustBinary(t, nil, "create", "-repo", repo, "-collection", "vm", "d="+img)

	m := startMount(t, repo)
	if out, err := exec.Command("fusermount3", "-u", m.dir).CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -u: %v: %s", err, out)
	}
	if code, out := m.wait(t); code != 0 || !strings.Contains(out, "was unmounted") {
		t.Errorf("mount after fusermount3 -u: exit %d, %s; want 0, was unmounted", code, out)
	}

	m = startMount(t, repo)
	m.cmd.Process.Signal(os.Interrupt)
	if code, out := m.wait(t); code != 0 || !strings.Contains(out, "unmounted "+m.dir) || strings.Contains(out, "detach") {
		t.Errorf("mount after SIGINT: exit %d, %s; want 0, unmounted at once", code, out)
	}
	if systest.IsMountPoint(t, m.dir) {
		t.Errorf("%s is still mounted after SIGINT", m.dir)
	}
}

// A damaged chunk fails the reads of its region with EIO, and the mount
// says on stderr which object is damaged.
func TestCLIMountNamesDamagedObject(t *testing.T) {
	systest.RequireFUSE(t)
	repo, pack := damageAPack(t)
	m := startMount(t, repo)
	_, err := os.ReadFile(filepath.Join(m.dir, "vm", "latest", "d.img"))
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("reading the damaged disk: %v, want EIO", err)
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	code, out := m.wait(t)
	if code != 0 || !strings.Contains(out, strings.TrimSuffix(pack, filepath.Ext(pack))) {
		t.Errorf("mount: exit %d, %s; want it to name the damaged pack %s", code, out, pack)
	}
}
