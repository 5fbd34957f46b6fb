package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/internal/demodisk"
)

// cli runs a command line in-process and returns its exit status and output.
func cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), &env{stdout: &out, stderr: &errOut}, args)
	return code, out.String(), errOut.String()
}

func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := cli(t, args...)
	if code != 0 {
		t.Fatalf("diskpoint %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

type jsonPoint struct {
	ID          string   `json:"id"`
	Collection  string   `json:"collection"`
	Created     string   `json:"created"`
	Consistency string   `json:"consistency"`
	Excluded    []string `json:"excluded"`
	Disks       []struct {
		Name         string `json:"name"`
		Size         int64  `json:"size"`
		BlockSize    int    `json:"block_size"`
		Parent       string `json:"parent"`
		ChangedBytes int64  `json:"changed_bytes"`
		StoredBytes  int64  `json:"stored_bytes"`
	} `json:"disks"`
}

func TestCLIEndToEnd(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	osImg, dataImg, scratch := filepath.Join(dir, "os.img"), filepath.Join(dir, "data.img"), filepath.Join(dir, "scratch.img")
	for i, p := range []string{osImg, dataImg, scratch} {
		if err := demodisk.Create(p, 4<<20+int64(i)*1000, uint64(i), demodisk.MixedImage); err != nil {
			t.Fatal(err)
		}
	}
	if out := mustCLI(t, "init", "-repo", repo, "-block-size", "32KiB"); !strings.Contains(out, "32 KiB") {
		t.Errorf("init said %q", out)
	}
	config := filepath.Join(dir, "vm.json")
	os.WriteFile(config, []byte(`{"name":"vm1"}`), 0o600)

	var first jsonPoint
	out := mustCLI(t, "create", "-repo", repo, "-collection", "vm1", "-exclude", "scratch", "-config", config, "-json",
		"os="+osImg, "data="+dataImg, "scratch="+scratch)
	if err := json.Unmarshal([]byte(out), &first); err != nil {
		t.Fatalf("create -json printed %q: %v", out, err)
	}
	if first.ID == "" || first.Collection != "vm1" || first.Created == "" || first.Consistency != "inconsistent" ||
		len(first.Excluded) != 1 || first.Excluded[0] != "scratch" || len(first.Disks) != 2 {
		t.Fatalf("create -json: %+v", first)
	}
	for _, d := range first.Disks {
		if d.BlockSize != 32<<10 || d.Size == 0 || d.StoredBytes == 0 || d.Parent != "" {
			t.Errorf("disk %+v", d)
		}
	}
	originalData, _ := os.ReadFile(dataImg)

	// Change the data disk, and tell create which ranges changed.
	changes, err := demodisk.Scatter(dataImg, 0.01, 9)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, r := range changes {
		lines = append(lines, fmt.Sprintf("%d %d", r.Offset, r.Length))
	}
	rangesFile := filepath.Join(dir, "data.ranges")
	os.WriteFile(rangesFile, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
	var second jsonPoint
	out = mustCLI(t, "create", "-repo", repo, "-collection", "vm1", "-changed", "data="+rangesFile, "-json", "os="+osImg, "data="+dataImg)
	if err := json.Unmarshal([]byte(out), &second); err != nil {
		t.Fatal(err)
	}
	for _, d := range second.Disks {
		if d.Parent != first.ID {
			t.Errorf("disk %s parent %q, want %q", d.Name, d.Parent, first.ID)
		}
		if d.Name == "os" && (d.ChangedBytes != 0 || d.StoredBytes != 0) {
			t.Errorf("unchanged os disk: %+v", d)
		}
		if d.Name == "data" && d.ChangedBytes == 0 {
			t.Errorf("changed data disk reports no change: %+v", d)
		}
	}

	var list []jsonPoint
	if err := json.Unmarshal([]byte(mustCLI(t, "list", "-repo", repo, "-collection", "vm1", "-json")), &list); err != nil || len(list) != 2 || list[1].ID != second.ID {
		t.Fatalf("list -json: %+v, %v", list, err)
	}
	if out := mustCLI(t, "list", "-repo", repo, "-collection", "vm1"); !strings.Contains(out, first.ID) || !strings.Contains(out, second.ID) {
		t.Errorf("list: %s", out)
	}
	if out := mustCLI(t, "show", "-repo", repo, "-collection", "vm1", "-point", "latest"); !strings.Contains(out, second.ID) || !strings.Contains(out, "data") {
		t.Errorf("show latest: %s", out)
	}

	restored := filepath.Join(dir, "restored.img")
	mustCLI(t, "restore", "-repo", repo, "-collection", "vm1", "-point", first.ID, "-disk", "data", "-to", restored)
	if got, _ := os.ReadFile(restored); !bytes.Equal(got, originalData) {
		t.Fatal("restore of the first point differs from the original data disk")
	}
	mustCLI(t, "restore", "-repo", repo, "-collection", "vm1", "-point", "latest", "-disk", "data", "-to", restored, "-force")
	if got, want := readAll(t, restored), readAll(t, dataImg); !bytes.Equal(got, want) {
		t.Fatal("restore of latest differs from the changed data disk")
	}

	if out := mustCLI(t, "verify", "-repo", repo); !strings.Contains(out, "2 restore points") {
		t.Errorf("verify: %s", out)
	}
	mustCLI(t, "delete", "-repo", repo, "-collection", "vm1", "-point", first.ID)
	if out := mustCLI(t, "gc", "-repo", repo); !strings.Contains(out, "reclaimed") {
		t.Errorf("gc: %s", out)
	}
	mustCLI(t, "verify", "-repo", repo)

	// Damage a pack: verify exits non-zero and names the damaged object.
	var pack string
	filepath.Walk(filepath.Join(repo, "packs"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Size() > 1000 {
			pack = p
		}
		return nil
	})
	data, _ := os.ReadFile(pack)
	data[100] ^= 1
	os.WriteFile(pack, data, 0o600)
	code, out, errOut := cli(t, "verify", "-repo", repo)
	if code != 3 || !strings.Contains(out, "DAMAGED") || !strings.Contains(errOut, filepath.Base(pack)) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Fatalf("verify of a damaged repository: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
}

func readAll(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCLIErrors(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	mustCLI(t, "init", "-repo", repo)
	img := filepath.Join(dir, "d.img")
	demodisk.Create(img, 1<<20, 1, demodisk.MixedImage)
	badRanges := filepath.Join(dir, "bad.ranges")
	os.WriteFile(badRanges, []byte("0 10\nten 20\n"), 0o600)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "usage"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"create", "-repo", repo}, 2, "missing -collection"},
		{[]string{"create", "-repo", repo, "-collection", "vm"}, 2, "no disks"},
		{[]string{"create", "-repo", repo, "-collection", "vm", "nodisk"}, 2, "DISK=PATH"},
		{[]string{"create", "-repo", repo, "-collection", "vm", "d=" + filepath.Join(dir, "nope.img")}, 1, "nope.img"},
		{[]string{"create", "-repo", repo, "-collection", "vm", "-changed", "d=" + badRanges, "d=" + img}, 1, "line 2"},
		{[]string{"create", "-repo", repo, "-collection", "bad/name", "d=" + img}, 1, "bad/name"},
		{[]string{"create", "-repo", filepath.Join(dir, "norepo"), "-collection", "vm", "d=" + img}, 10, "norepo"},
		{[]string{"init", "-repo", repo}, 1, "already exists"},
		{[]string{"init", "-repo", filepath.Join(dir, "r2"), "-block-size", "1000"}, 1, "block size"},
		{[]string{"show", "-repo", repo, "-collection", "vm", "-point", "latest"}, 1, "no restore points"},
		{[]string{"restore", "-repo", repo, "-collection", "vm", "-point", "nope", "-disk", "d", "-to", filepath.Join(dir, "x")}, 1, "nope"},
		{[]string{"delete", "-repo", repo, "-collection", "vm", "-point", "nope"}, 1, "not found"},
	} {
		code, _, errOut := cli(t, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("diskpoint %v: exit %d, stderr %q; want exit %d mentioning %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}
	// None of that damaged the repository.
	mustCLI(t, "verify", "-repo", repo)
}

// DISKPOINT_CPUPROFILE and DISKPOINT_MEMPROFILE write pprof profiles
// (gzipped protocol buffers) of the command, DISKPOINT_TRACE an execution
// trace.
func TestProfilesOnRequest(t *testing.T) {
	dir := t.TempDir()
	cpu, mem, trace := filepath.Join(dir, "cpu.prof"), filepath.Join(dir, "mem.prof"), filepath.Join(dir, "trace.out")
	c := &childRun{cmd: exec.Command(os.Args[0], "init", "-repo", filepath.Join(dir, "repo"))}
	c.cmd.Env = append(os.Environ(), "DISKPOINT_TEST_CLI=1", "DISKPOINT_CPUPROFILE="+cpu, "DISKPOINT_MEMPROFILE="+mem, "DISKPOINT_TRACE="+trace)
	c.cmd.Stdout, c.cmd.Stderr = &c.stdout, &c.stderr
	if err := c.cmd.Run(); err != nil {
		t.Fatalf("init: %v\n%s", err, c.stderr.Bytes())
	}
	for _, path := range []string{cpu, mem} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) < 2 || data[0] != 0x1f || data[1] != 0x8b {
			t.Errorf("%s: %d bytes, not a gzipped profile", path, len(data))
		}
	}
	if data, err := os.ReadFile(trace); err != nil || !bytes.HasPrefix(data, []byte("go 1.")) {
		t.Errorf("%s: %.20q, %v: not an execution trace (which starts with its Go version)", trace, data, err)
	}
}
