package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/internal/demodisk"
)

// runBinary runs the CLI as a child process (the test binary re-executed
// as diskpoint) with extra environment variables, and returns its exit
// status and output.
func runBinary(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	c := &childRun{cmd: exec.Command(os.Args[0], args...)}
	c.cmd.Env = append(append(os.Environ(), "DISKPOINT_TEST_CLI=1"), env...)
	c.cmd.Stdout, c.cmd.Stderr = &c.stdout, &c.stderr
	err := c.cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return exit.ExitCode(), c.stdout.String(), c.stderr.String()
	case err != nil:
		t.Fatal(err)
	}
	return 0, c.stdout.String(), c.stderr.String()
}

// mustBinary is runBinary that fails the test unless the command succeeds.
func mustBinary(t *testing.T, env []string, args ...string) string {
	t.Helper()
	code, out, errOut := runBinary(t, env, args...)
	if code != 0 {
		t.Fatalf("diskpoint %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

// Sizes are read with go-humanize, every usual spelling, as binary units.
func TestCLISizesParseEverySpelling(t *testing.T) {
	dir := t.TempDir()
	for i, size := range []string{"64kb", "64KiB", "64K", "64k", "64KB", "64 KiB", "65536", "1MiB", "1m"} {
		repo := filepath.Join(dir, "repo"+string(rune('a'+i)))
		out := mustBinary(t, nil, "init", "-repo", repo, "-block-size", size)
		want := "64 KiB"
		if strings.HasPrefix(size, "1") {
			want = "1.0 MiB"
		}
		if !strings.Contains(out, "block size "+want) {
			t.Errorf("init -block-size %q: %s; want block size %s", size, out, want)
		}
	}
	for _, bad := range []string{"64q", "kb", "-1K", "0"} {
		if code, _, errOut := runBinary(t, nil, "init", "-repo", filepath.Join(dir, "bad"), "-block-size", bad); code != 2 || !strings.Contains(errOut, "-block-size") {
			t.Errorf("init -block-size %q: exit %d, %s; want a usage error", bad, code, errOut)
		}
	}
}

// A -changed range past the disk's end is an error naming the file and
// line, and nothing is stored.
func TestCLIChangedRangePastDiskEnd(t *testing.T) {
	dir := t.TempDir()
	repo, img, ranges := filepath.Join(dir, "repo"), filepath.Join(dir, "d.img"), filepath.Join(dir, "d.ranges")
	mustBinary(t, nil, "init", "-repo", repo)
	if err := demodisk.Create(img, 1<<20, 1, demodisk.MixedImage); err != nil {
		t.Fatal(err)
	}
	mustBinary(t, nil, "create", "-repo", repo, "-collection", "vm", "d="+img)
	os.WriteFile(ranges, []byte("0 4096\n1048000 4096\n"), 0o600)
	code, _, errOut := runBinary(t, nil, "create", "-repo", repo, "-collection", "vm", "-changed", "d="+ranges, "d="+img)
	if code != 1 || !strings.Contains(errOut, "d.ranges") || !strings.Contains(errOut, "line 2") || !strings.Contains(errOut, "past the disk's end") {
		t.Fatalf("create with a range past the end: exit %d, %s", code, errOut)
	}
	if out := mustBinary(t, nil, "list", "-repo", repo, "-collection", "vm", "-json"); strings.Count(out, `"id"`) != 1 {
		t.Fatalf("the failed create stored a point: %s", out)
	}
}
