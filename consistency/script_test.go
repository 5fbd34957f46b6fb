package consistency_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/consistency"
)

func writeScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o700); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestScriptHookRunsWithoutShell(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "args")
	pre := writeScript(t, dir, "pre.sh", `for a in "$@"; do printf '%s\n' "$a"; done > `+out+"\necho flushed\n")
	h := &consistency.ScriptHook{Config: consistency.ScriptConfig{
		PreScriptLocation: pre, PreScriptParams: []string{"db one", "$(touch " + dir + "/pwned)", "; rm -rf /"},
		TimeoutInSeconds: 10,
	}}
	var run consistency.Run
	if err := h.Ready(context.Background(), &run); err != nil {
		t.Fatal(err)
	}
	if err := h.Freeze(context.Background(), &run); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out)
	if want := "db one\n$(touch " + dir + "/pwned)\n; rm -rf /\n"; string(got) != want {
		t.Errorf("script saw arguments %q, want %q", got, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "pwned")); err == nil {
		t.Error("a parameter was run by a shell")
	}
	if run.ExitCode == nil || *run.ExitCode != 0 || run.Output != "flushed\n" || run.Command != pre || run.Attempts != 1 {
		t.Errorf("run record %+v", run)
	}
	// No post script configured: Thaw does nothing and succeeds.
	if err := h.Thaw(context.Background(), &consistency.Run{}); err != nil {
		t.Error(err)
	}
}

func TestScriptFailureTimeoutAndRetries(t *testing.T) {
	dir := t.TempDir()
	counter := filepath.Join(dir, "count")
	for _, tc := range []struct {
		name     string
		body     string
		retries  int
		timeout  int
		wantErr  string
		attempts int
		exit     int
	}{
		{"fails", "echo 'db locked' >&2\nexit 3\n", 0, 10, "exit status 3", 1, 3},
		{"fails every retry", "exit 4\n", 2, 10, "after 3 attempt(s)", 3, 4},
		{"succeeds on the third try", "n=$(cat " + counter + " 2>/dev/null || echo 0); n=$((n+1)); echo $n > " + counter + "\n[ $n -ge 3 ]\n", 2, 10, "", 3, 0},
		{"times out", "sleep 30 &\nwait\n", 0, 1, "timed out", 1, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(counter)
			script := writeScript(t, dir, "pre.sh", tc.body)
			h := &consistency.ScriptHook{Config: consistency.ScriptConfig{
				PreScriptLocation: script, PreScriptNoOfRetries: tc.retries, TimeoutInSeconds: tc.timeout,
			}}
			var run consistency.Run
			err := h.Freeze(context.Background(), &run)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
			} else {
				var se *consistency.ScriptError
				if !errors.As(err, &se) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want a ScriptError saying %q", err, tc.wantErr)
				}
				if se.ExitCode != tc.exit {
					t.Errorf("exit code %d, want %d", se.ExitCode, tc.exit)
				}
			}
			if run.Attempts != tc.attempts || run.ExitCode == nil || *run.ExitCode != tc.exit {
				t.Errorf("run: attempts %d exit %v; want %d, %d", run.Attempts, run.ExitCode, tc.attempts, tc.exit)
			}
			if tc.name == "fails" && !strings.Contains(run.Output, "db locked") {
				t.Errorf("stderr not captured: %q", run.Output)
			}
		})
	}
}

func TestScriptPermissionChecks(t *testing.T) {
	dir := t.TempDir()
	script := writeScript(t, dir, "pre.sh", "exit 0\n")
	config := filepath.Join(dir, "VMSnapshotScriptPluginConfig.json")
	os.WriteFile(config, []byte(`{"preScriptLocation": "`+script+`", "timeoutInSeconds": 30}`), 0o600)

	cfg, err := consistency.LoadScriptConfig(config, false)
	if err != nil {
		t.Fatal(err)
	}
	h := &consistency.ScriptHook{Config: cfg}
	if err := h.Ready(context.Background(), &consistency.Run{}); err != nil {
		t.Fatalf("safe script refused: %v", err)
	}

	os.Chmod(config, 0o666)
	if _, err := consistency.LoadScriptConfig(config, false); err == nil || !strings.Contains(err.Error(), "group or others can write") {
		t.Errorf("world-writable config accepted: %v", err)
	}
	if _, err := consistency.LoadScriptConfig(config, true); err != nil {
		t.Errorf("opt-out refused: %v", err)
	}
	os.Chmod(script, 0o777)
	if err := h.Ready(context.Background(), &consistency.Run{}); err == nil || !strings.Contains(err.Error(), "group or others can write") {
		t.Errorf("world-writable script accepted: %v", err)
	}
	h.AllowInsecure = true
	if err := h.Ready(context.Background(), &consistency.Run{}); err != nil {
		t.Errorf("opt-out refused: %v", err)
	}
	os.Chmod(script, 0o600)
	if err := h.Ready(context.Background(), &consistency.Run{}); err == nil || !strings.Contains(err.Error(), "not an executable") {
		t.Errorf("non-executable script accepted: %v", err)
	}
}

func TestParseScriptConfig(t *testing.T) {
	for _, tc := range []struct {
		in      string
		wantErr string
		check   func(consistency.ScriptConfig) bool
	}{
		{`{"pluginName":"ScriptRunner","preScriptLocation":"/etc/azure/pre.sh","postScriptLocation":"/etc/azure/post.sh","preScriptParams":["a","b"],"postScriptParams":[],"preScriptNoOfRetries":2,"postScriptNoOfRetries":1,"timeoutInSeconds":30,"continueBackupOnFailure":false,"fsFreezeEnabled":false}`, "",
			func(c consistency.ScriptConfig) bool {
				return c.PreScriptNoOfRetries == 2 && c.TimeoutInSeconds == 30 && !c.ContinueBackupOnFailure && !c.FsFreezeEnabled && len(c.PreScriptParams) == 2
			}},
		{`{"preScriptLocation":"/pre"}`, "", func(c consistency.ScriptConfig) bool {
			return c.TimeoutInSeconds == 60 && c.ContinueBackupOnFailure && c.FsFreezeEnabled
		}},
		{`{}`, "neither", nil},
		{`{"preScriptLocation":"/pre","timeoutInSeconds":99999}`, "timeoutInSeconds", nil},
		{`{"preScriptLocation":"/pre","preScriptNoOfRetries":-1}`, "retries", nil},
		{`{"preScriptLocation":`, "script config", nil},
		{`{"preScriptLocation":"/pre","preScriptParams":"notalist"}`, "script config", nil},
	} {
		cfg, err := consistency.ParseScriptConfig([]byte(tc.in))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseScriptConfig(%s) = %v, want error with %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !tc.check(cfg) {
			t.Errorf("ParseScriptConfig(%s) = %+v, %v", tc.in, cfg, err)
		}
	}
}

func FuzzParseScriptConfig(f *testing.F) {
	f.Add([]byte(`{"preScriptLocation":"/pre","postScriptLocation":"/post","preScriptParams":["x"],"timeoutInSeconds":5}`))
	f.Add([]byte(`{"preScriptLocation":"/pre","continueBackupOnFailure":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := consistency.ParseScriptConfig(data)
		if err != nil {
			return
		}
		if cfg.TimeoutInSeconds < 1 || cfg.TimeoutInSeconds > 3600 || cfg.PreScriptNoOfRetries < 0 || cfg.PostScriptNoOfRetries < 0 {
			t.Fatalf("accepted out-of-range config %+v", cfg)
		}
		if cfg.PreScriptLocation == "" && cfg.PostScriptLocation == "" {
			t.Fatalf("accepted a config with no scripts")
		}
	})
}
