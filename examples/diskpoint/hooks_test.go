package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/internal/demodisk"
)

func TestCLIConsistencyAndHooksLog(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	img := filepath.Join(dir, "d.img")
	demodisk.Create(img, 1<<20, 1, demodisk.MixedImage)
	mustCLI(t, "init", "-repo", repo)
	pre := filepath.Join(dir, "pre.sh")
	post := filepath.Join(dir, "post.sh")
	os.WriteFile(pre, []byte("#!/bin/sh\necho cannot flush >&2\nexit 3\n"), 0o700)
	os.WriteFile(post, []byte("#!/bin/sh\necho resumed \"$@\"\n"), 0o700)

	out := mustCLI(t, "create", "-repo", repo, "-collection", "vm", "-consistency", "application", "-pre", pre, "-post", post, "-json", "d="+img)
	var rp map[string]any
	if err := json.Unmarshal([]byte(out), &rp); err != nil {
		t.Fatal(err)
	}
	// Neither scripts nor a freeze held the disk: crash at best (a reflink clone).
	if rp["requested_consistency"] != "application" || (rp["consistency"] != "crash" && rp["consistency"] != "inconsistent") ||
		!strings.Contains(rp["fallback_reason"].(string), "exit status 3") || rp["freeze_ms"] == nil {
		t.Fatalf("create -json after a failing pre script: %v", rp)
	}
	log := mustCLI(t, "hooks-log", "-repo", repo, "-collection", "vm")
	for _, want := range []string{pre, post, "failed", "3", "cannot flush"} {
		if !strings.Contains(log, want) {
			t.Errorf("hooks-log lacks %q:\n%s", want, log)
		}
	}
	// The next application request skips the scripts, and says so.
	out = mustCLI(t, "create", "-repo", repo, "-collection", "vm", "-consistency", "application", "-pre", pre, "-post", post, "d="+img)
	if strings.Contains(out, "application-consistent") || !strings.Contains(out, "skipped") {
		t.Errorf("second application create: %s", out)
	}

	// An Azure-style config that others can write is refused.
	cfg := filepath.Join(dir, "VMSnapshotScriptPluginConfig.json")
	os.WriteFile(cfg, []byte(`{"preScriptLocation":"`+pre+`","continueBackupOnFailure":false}`), 0o600)
	os.Chmod(cfg, 0o666)
	if code, _, errOut := cli(t, "create", "-repo", repo, "-collection", "vm2", "-consistency", "application", "-hook-config", cfg, "d="+img); code != 1 || !strings.Contains(errOut, "others can write") {
		t.Errorf("world-writable hook config: exit %d: %s", code, errOut)
	}
	// With continueBackupOnFailure false, the failing pre script fails the create.
	os.Chmod(cfg, 0o600)
	if code, _, errOut := cli(t, "create", "-repo", repo, "-collection", "vm2", "-consistency", "application", "-hook-config", cfg, "d="+img); code != 1 || !strings.Contains(errOut, "exit status 3") {
		t.Errorf("continueBackupOnFailure=false: exit %d: %s", code, errOut)
	}
	if out := mustCLI(t, "list", "-repo", repo, "-collection", "vm2", "-json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("a failed create stored something: %s", out)
	}

	// Rate limits.
	mustCLI(t, "create", "-repo", repo, "-collection", "vm3", "-rate-limit", "1/1h", "d="+img)
	if code, _, errOut := cli(t, "create", "-repo", repo, "-collection", "vm3", "-rate-limit", "1/1h", "d="+img); code != 13 || !strings.Contains(errOut, "retry after") {
		t.Errorf("second create under 1/1h: exit %d: %s", code, errOut)
	}
	for _, bad := range [][]string{{"-consistency", "quantum"}, {"-on-failure", "shrug"}, {"-rate-limit", "lots"}} {
		args := append([]string{"create", "-repo", repo, "-collection", "vm4"}, bad...)
		if code, _, _ := cli(t, append(args, "d="+img)...); code != 2 {
			t.Errorf("%v: exit %d, want 2", bad, code)
		}
	}
}
