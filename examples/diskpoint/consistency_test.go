package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/internal/systest"
)

// createdPoint is what create -json says about the consistency.
type createdPoint struct {
	ID                   string   `json:"id"`
	Consistency          string   `json:"consistency"`
	RequestedConsistency string   `json:"requested_consistency"`
	FallbackReason       string   `json:"fallback_reason"`
	CaptureSpreadMillis  *int64   `json:"capture_spread_ms"`
	Warnings             []string `json:"warnings"`
	Disks                []struct {
		Capture string `json:"capture"`
	} `json:"disks"`
}

func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o700); err != nil {
		t.Fatal(err)
	}
	return path
}

// A command line whose flags the mode would ignore is refused as a usage
// error (exit 2), naming the contradiction, and stores nothing.
func TestCLIContradictoryFlagsAreRefused(t *testing.T) {
	dir := t.TempDir()
	repo, img := filepath.Join(dir, "repo"), filepath.Join(dir, "d.img")
	demodisk.Create(img, 1<<20, 1, demodisk.MixedImage)
	mustCLI(t, "init", "-repo", repo)
	pre := script(t, dir, "pre.sh", "exit 0\n")
	noFreeze := filepath.Join(dir, "VMSnapshotScriptPluginConfig.json")
	os.WriteFile(noFreeze, []byte(`{"preScriptLocation":"`+pre+`","fsFreezeEnabled":false}`), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-consistency", "crash", "-freeze", dir}, "crash mode freezes nothing; ask for filesystem or application consistency (given: -consistency crash -freeze)"},
		{[]string{"-freeze", dir}, "crash mode freezes nothing"}, // crash is the default
		{[]string{"-consistency", "filesystem", "-pre", pre}, "scripts run only in application mode"},
		{[]string{"-consistency", "crash", "-hook-config", noFreeze}, "scripts run only in application mode"},
		{[]string{"-consistency", "crash", "-on-failure", "fail"}, "crash mode runs no hooks"},
		{[]string{"-consistency", "application", "-hook-config", noFreeze, "-freeze", dir}, "fsFreezeEnabled false"},
		{[]string{"-consistency", "inconsistent"}, "want crash, filesystem or application"},
	} {
		args := append(append([]string{"create", "-repo", repo, "-collection", "vm"}, tc.args...), "d="+img)
		code, _, errOut := runBinary(t, nil, args...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 saying %q", tc.args, code, errOut, tc.want)
		}
	}
	if _, out, _ := runBinary(t, nil, "collections", "-repo", repo, "-json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("a refused create stored something: %s", out)
	}
}

// What the CLI records is what happened: application asked for with no
// hooks at all is not application, and the live read is labelled
// inconsistent, with the reasons, and a warning on stderr; exit 0.
func TestCLIRecordsWhatHappened(t *testing.T) {
	dir := t.TempDir()
	repo, a, b := filepath.Join(dir, "repo"), filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	demodisk.Create(a, 1<<20, 1, demodisk.MixedImage)
	demodisk.Create(b, 1<<20, 2, demodisk.MixedImage)
	mustCLI(t, "init", "-repo", repo)
	// Two disks with nothing holding them: whether they are read live (no
	// reflinks here) or cloned one after another, not one instant.
	code, out, errOut := runBinary(t, nil, "create", "-repo", repo, "-collection", "vm", "-consistency", "application", "-json", "a="+a, "b="+b)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rp createdPoint
	if err := json.Unmarshal([]byte(out), &rp); err != nil {
		t.Fatalf("create -json printed %q: %v", out, err)
	}
	if rp.RequestedConsistency != "application" || rp.Consistency != "inconsistent" || rp.CaptureSpreadMillis == nil ||
		!strings.Contains(rp.FallbackReason, "no application hooks configured") || !strings.Contains(rp.FallbackReason, "no file-system freeze hooks configured") {
		t.Errorf("create -json: %+v", rp)
	}
	if !strings.Contains(errOut, "warning: restore point "+rp.ID+" is inconsistent") {
		t.Errorf("no warning on stderr: %q", errOut)
	}
	_, show, _ := runBinary(t, nil, "show", "-repo", repo, "-collection", "vm", "-point", rp.ID)
	if !strings.Contains(show, "consistency: inconsistent (asked for application)") || !strings.Contains(show, "no application hooks configured") ||
		!strings.Contains(show, "nothing held the disks still; first to last disk captured over") {
		t.Errorf("show:\n%s", show)
	}
}

// A post script that fails after the capture keeps the restore point: exit
// 0, the failure on stderr, in create -json's and show's warnings, and in
// the hook log; the next application request skips the scripts. With
// -on-failure fail it fails the create. With a real freeze (root), the
// point is application-consistent all the same.
func TestCLIFailingPostScriptKeepsThePoint(t *testing.T) {
	dir := t.TempDir()
	repo, img := filepath.Join(dir, "repo"), filepath.Join(dir, "d.img")
	demodisk.Create(img, 1<<20, 1, demodisk.MixedImage)
	mustCLI(t, "init", "-repo", repo)
	pre := script(t, dir, "pre.sh", "echo flushed\n")
	post := script(t, dir, "post.sh", "echo cannot resume >&2\nexit 3\n")
	create := func(collection string, extra ...string) (int, createdPoint, string) {
		args := append([]string{"create", "-repo", repo, "-collection", collection, "-consistency", "application", "-pre", pre, "-post", post, "-json"}, extra...)
		code, out, errOut := runBinary(t, nil, append(args, "d="+img)...)
		var rp createdPoint
		if code == 0 {
			if err := json.Unmarshal([]byte(out), &rp); err != nil {
				t.Fatalf("create -json printed %q: %v", out, err)
			}
		}
		return code, rp, errOut
	}
	check := func(collection string, code int, rp createdPoint, errOut string) {
		t.Helper()
		if code != 0 {
			t.Fatalf("a failing post script: exit %d: %s", code, errOut)
		}
		if len(rp.Warnings) != 1 || !strings.Contains(rp.Warnings[0], "exit status 3") {
			t.Errorf("warnings %q", rp.Warnings)
		}
		if !strings.Contains(errOut, "warning: restore point "+rp.ID+": post script failed") {
			t.Errorf("stderr lacks the warning: %q", errOut)
		}
		_, show, _ := runBinary(t, nil, "show", "-repo", repo, "-collection", collection, "-point", rp.ID)
		if !strings.Contains(show, "warning:") || !strings.Contains(show, "exit status 3") {
			t.Errorf("show lacks the warning:\n%s", show)
		}
		_, log, _ := runBinary(t, nil, "hooks-log", "-repo", repo, "-collection", collection)
		if !strings.Contains(log, post) || !strings.Contains(log, "failed") || !strings.Contains(log, "cannot resume") {
			t.Errorf("hooks-log lacks the failed post script:\n%s", log)
		}
	}
	code, rp, errOut := create("vm")
	check("vm", code, rp, errOut)
	// The failure counts: the next application request skips the scripts.
	code, next, errOut := create("vm")
	if code != 0 || !strings.Contains(next.FallbackReason, "application hooks skipped") || len(next.Warnings) != 0 {
		t.Errorf("next request: exit %d, %+v, %s", code, next, errOut)
	}
	if code, _, errOut := create("strict", "-on-failure", "fail"); code != 1 || !strings.Contains(errOut, "exit status 3") {
		t.Errorf("-on-failure fail: exit %d: %s", code, errOut)
	}
	if _, out, _ := runBinary(t, nil, "list", "-repo", repo, "-collection", "strict", "-json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("-on-failure fail stored something: %s", out)
	}

	t.Run("frozen", func(t *testing.T) {
		systest.Require(t, "mkfs.ext4")
		_, mnt := systest.FileSystem(t, t.TempDir(), "ext4", 32<<20)
		code, rp, errOut := create("frozen", "-freeze", mnt)
		check("frozen", code, rp, errOut)
		if rp.Consistency != "application" || rp.FallbackReason != "" || rp.Disks[0].Capture != "read-frozen" {
			t.Errorf("quiesced and frozen, post script failed: %+v", rp)
		}
	})
}
