package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
)

// unlock removes the locks of operations that died and leaves live ones;
// unlock -all removes those too.
func TestCLIUnlock(t *testing.T) {
	repo := filepath.Join(t.TempDir(), "repo")
	mustCLI(t, "init", "-repo", repo)
	store, err := chain.NewLocalStore(repo)
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	plant := func(name string, info chain.LockInfo) {
		data, _ := json.Marshal(info)
		if err := store.Put(context.Background(), "locks/"+name, data); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	plant("dead", chain.LockInfo{Operation: "create", Host: host, PID: 1 << 30, Created: now, Refreshed: now})
	plant("live", chain.LockInfo{Operation: "gc", Exclusive: true, Host: host, PID: os.Getppid(), Created: now, Refreshed: now})

	if out := mustCLI(t, "unlock", "-repo", repo); !strings.Contains(out, "removed 1 stale lock") {
		t.Errorf("unlock said %q", out)
	}
	if _, err := os.Stat(filepath.Join(repo, "locks", "live")); err != nil {
		t.Fatalf("unlock removed a live lock: %v", err)
	}
	if code, _, errOut := cli(t, "gc", "-repo", repo); code != 1 || !strings.Contains(errOut, "locked") {
		t.Fatalf("gc beside a live exclusive lock: exit %d, %s", code, errOut)
	}
	if out := mustCLI(t, "unlock", "-repo", repo, "-all"); !strings.Contains(out, "removed 1 lock") {
		t.Errorf("unlock -all said %q", out)
	}
	mustCLI(t, "gc", "-repo", repo)
}
