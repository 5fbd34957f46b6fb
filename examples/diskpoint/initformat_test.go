package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIInitFormat: -format picks the repository format the config records,
// the default stays version 1, and a version that does not exist is a usage
// error that names the flag.
func TestCLIInitFormat(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		version int
	}{
		{nil, 1},
		{[]string{"-format", "1"}, 1},
		{[]string{"-format", "2"}, 2},
	} {
		repo := filepath.Join(t.TempDir(), "repo")
		out := mustBinary(t, nil, append([]string{"init", "-repo", repo}, tc.args...)...)
		var config struct {
			Version int `json:"version"`
		}
		raw, err := os.ReadFile(filepath.Join(repo, "config"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, &config); err != nil {
			t.Fatalf("config: %v", err)
		}
		if config.Version != tc.version {
			t.Errorf("init %v: config version %d, want %d", tc.args, config.Version, tc.version)
		}
		if want := "format " + string(rune('0'+tc.version)); !strings.Contains(out, want) {
			t.Errorf("init %v said %q, want it to name %q", tc.args, out, want)
		}
		// The repository the CLI made is one it can use.
		mustBinary(t, nil, "stats", "-repo", repo)
	}
	code, _, errOut := runBinary(t, nil, "init", "-repo", filepath.Join(t.TempDir(), "r"), "-format", "3")
	if code != 2 || !strings.Contains(errOut, "-format") {
		t.Errorf("init -format 3: exit %d, %q; want usage error 2 naming -format", code, errOut)
	}
}
