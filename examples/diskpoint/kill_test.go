package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/internal/demodisk"
)

// TestMain lets the test binary act as the CLI in a child process, so tests
// can kill a real diskpoint process with SIGKILL.
func TestMain(m *testing.M) {
	if os.Getenv("DISKPOINT_TEST_CLI") == "1" {
		os.Exit(mainStatus()) // with main's signal handling
	}
	os.Exit(m.Run())
}

// childRun is the CLI running in a child process.
type childRun struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
}

// startChild starts the CLI as a child process.
func startChild(t *testing.T, args ...string) *childRun {
	t.Helper()
	return startChildEnv(t, nil, args...)
}

// startChildEnv starts the CLI as a child process with more environment.
func startChildEnv(t *testing.T, env []string, args ...string) *childRun {
	t.Helper()
	c := &childRun{cmd: exec.Command(os.Args[0], args...)}
	c.cmd.Env = append(append(os.Environ(), "DISKPOINT_TEST_CLI=1"), env...)
	c.cmd.Stdout, c.cmd.Stderr = &c.stdout, &c.stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return c
}

// wait waits for the child, fails the test if it failed, and returns its stdout.
func (c *childRun) wait(t *testing.T) []byte {
	t.Helper()
	if err := c.cmd.Wait(); err != nil {
		t.Fatalf("diskpoint %v: %v\n%s", c.cmd.Args[1:], err, c.stderr.Bytes())
	}
	return c.stdout.Bytes()
}

// A copy killed with SIGKILL right after its first checkpoint keeps what it
// checkpointed; the rerun moves only the rest and the copy restores exactly.
// DISKPOINT_TEST_FORMAT picks the kind of repositories (testRepoFormat).
func TestCopyKilledHalfwayFinishesOnRerun(t *testing.T) {
	dir := t.TempDir()
	src, dst, img := filepath.Join(dir, "src"), filepath.Join(dir, "dst"), filepath.Join(dir, "d.img")
	demodisk.Create(img, 48<<20, 9, demodisk.Mix{Random: 1}) // incompressible: the copy takes a while
	initTestRepo(t, src, testRepoFormat(t))                  // its points, if any, are not what this test copies
	initTestRepo(t, dst, testRepoFormat(t))
	var rp struct{ ID string }
	json.Unmarshal([]byte(mustCLI(t, "create", "-repo", src, "-collection", "vm", "-json", "d="+img)), &rp)
	args := []string{"copy", "-repo", src, "-collection", "vm", "-point", rp.ID, "-to-repo", dst, "-to-collection", "dr", "-checkpoint", "4MiB", "-json"}

	killAtFirstCheckpoint(t, dst, args...)

	var resumed struct {
		Blobs int64 `json:"blobs_copied"`
	}
	if err := json.Unmarshal([]byte(mustCLI(t, args...)), &resumed); err != nil {
		t.Fatal(err)
	}
	full := int64(48<<20) / (64 << 10) // chunks of the disk, before block-map nodes
	if resumed.Blobs >= full {
		t.Errorf("the rerun moved %d blobs, the whole disk has %d chunks: it did not resume", resumed.Blobs, full)
	}
	out := filepath.Join(dir, "restored.img")
	mustCLI(t, "restore", "-repo", dst, "-collection", "dr", "-point", rp.ID, "-disk", "d", "-to", out)
	if !bytes.Equal(readAll(t, out), readAll(t, img)) {
		t.Fatal("the resumed copy restores something else")
	}
	mustCLI(t, "verify", "-repo", dst)
	t.Logf("killed after the first checkpoint; the rerun moved %d of %d chunks", resumed.Blobs, full)
}

// killAtFirstCheckpoint starts the CLI with args and kills it with SIGKILL
// as soon as the repository at dst holds an index file it wrote (a
// checkpoint of a copy or transfer into dst), and waits for it to die. If
// the command finished first, it skips the test.
func killAtFirstCheckpoint(t *testing.T, dst string, args ...string) {
	t.Helper()
	// The target may hold index files already (a converted repository
	// does): only a file the command writes is its checkpoint.
	before := map[string]bool{}
	existing, _ := filepath.Glob(filepath.Join(dst, "index", "[0-9a-f]*"))
	for _, name := range existing {
		before[name] = true
	}
	child := startChild(t, args...).cmd
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	// Watch the target for the first durable checkpoint (an index file), then kill.
	deadline := time.Now().Add(60 * time.Second)
	for {
		// An index file (not a .tmp- file still being written) is a checkpoint.
		names, _ := filepath.Glob(filepath.Join(dst, "index", "[0-9a-f]*"))
		if slices.ContainsFunc(names, func(name string) bool { return !before[name] }) {
			child.Process.Signal(syscall.SIGKILL)
			break
		}
		select {
		case err := <-exited:
			t.Skipf("%s finished (%v) before it could be killed", args[0], err)
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint in 60s")
		}
	}
	if err := <-exited; err == nil {
		t.Skipf("%s finished before the kill landed", args[0])
	}
}
