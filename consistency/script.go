package consistency

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// ScriptConfig is the script hook's settings, with the fields and JSON
// names of Azure Backup's VMSnapshotScriptPluginConfig.json, so that people
// moving from Azure keep their file and their scripts.
type ScriptConfig struct {
	PreScriptLocation     string   `json:"preScriptLocation"`
	PostScriptLocation    string   `json:"postScriptLocation"`
	PreScriptParams       []string `json:"preScriptParams"`
	PostScriptParams      []string `json:"postScriptParams"`
	PreScriptNoOfRetries  int      `json:"preScriptNoOfRetries"`
	PostScriptNoOfRetries int      `json:"postScriptNoOfRetries"`
	// TimeoutInSeconds bounds each run of a script (default 60, at most 3600).
	TimeoutInSeconds int `json:"timeoutInSeconds"`
	// ContinueBackupOnFailure: when the pre script fails, take a
	// file-system-consistent restore point instead (default true).
	ContinueBackupOnFailure bool `json:"continueBackupOnFailure"`
	// FsFreezeEnabled: freeze file systems after the pre script (default true).
	FsFreezeEnabled bool `json:"fsFreezeEnabled"`
}

// Script limits, as Azure documents them.
const (
	defaultScriptTimeout = 60
	maxScriptTimeout     = 3600
	maxScriptRetries     = 5
	maxScriptOutput      = 64 << 10
)

// ParseScriptConfig reads an Azure-style script config. Missing booleans
// take Azure's defaults (true); unknown fields are ignored, as Azure does.
func ParseScriptConfig(data []byte) (ScriptConfig, error) {
	var raw struct {
		ScriptConfig
		ContinueBackupOnFailure *bool `json:"continueBackupOnFailure"`
		FsFreezeEnabled         *bool `json:"fsFreezeEnabled"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return ScriptConfig{}, fmt.Errorf("script config: %w", err)
	}
	cfg := raw.ScriptConfig
	cfg.ContinueBackupOnFailure = raw.ContinueBackupOnFailure == nil || *raw.ContinueBackupOnFailure
	cfg.FsFreezeEnabled = raw.FsFreezeEnabled == nil || *raw.FsFreezeEnabled
	if cfg.TimeoutInSeconds == 0 {
		cfg.TimeoutInSeconds = defaultScriptTimeout
	}
	switch {
	case cfg.PreScriptLocation == "" && cfg.PostScriptLocation == "":
		return cfg, errors.New("script config: neither preScriptLocation nor postScriptLocation is set")
	case cfg.TimeoutInSeconds < 0 || cfg.TimeoutInSeconds > maxScriptTimeout:
		return cfg, fmt.Errorf("script config: timeoutInSeconds %d: want 1 to %d", cfg.TimeoutInSeconds, maxScriptTimeout)
	case cfg.PreScriptNoOfRetries < 0 || cfg.PreScriptNoOfRetries > maxScriptRetries,
		cfg.PostScriptNoOfRetries < 0 || cfg.PostScriptNoOfRetries > maxScriptRetries:
		return cfg, fmt.Errorf("script config: retries must be 0 to %d", maxScriptRetries)
	}
	return cfg, nil
}

// LoadScriptConfig reads an Azure-style script config file. Like Azure, it
// refuses a file that anyone but its owner can write, or whose owner is
// neither root nor the user running diskpoint, unless allowInsecure.
func LoadScriptConfig(path string, allowInsecure bool) (ScriptConfig, error) {
	if !allowInsecure {
		if err := checkOwnerOnly(path); err != nil {
			return ScriptConfig{}, err
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return ScriptConfig{}, fmt.Errorf("script config: %w", err)
	}
	cfg, err := ParseScriptConfig(data)
	if err != nil {
		return cfg, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// checkOwnerOnly refuses a file that group or others can write, or that is
// owned by someone other than root or the current user: whoever can change a
// hook script can run code as diskpoint's user.
func checkOwnerOnly(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("check permissions: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("%s has mode %04o: group or others can write it; make it writable by its owner only (chmod go-w), or opt out explicitly", path, perm)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s is owned by uid %d, neither root nor the current user (%d)", path, st.Uid, os.Geteuid())
	}
	return nil
}

// ScriptHook runs a pre script at Freeze and a post script at Thaw,
// directly (no shell: parameters reach the script exactly as given), each
// with a timeout and retries, capturing output and exit code.
type ScriptHook struct {
	Config ScriptConfig
	// AllowInsecure skips the permission checks on the scripts.
	AllowInsecure bool
}

var _ Hook = (*ScriptHook)(nil)

// Name is "script".
func (h *ScriptHook) Name() string { return "script" }

// Level is ApplicationLevel.
func (h *ScriptHook) Level() Level { return ApplicationLevel }

// Ready checks that the scripts exist, are executable and safe.
func (h *ScriptHook) Ready(ctx context.Context, run *Run) error {
	for _, path := range []string{h.Config.PreScriptLocation, h.Config.PostScriptLocation} {
		if path == "" {
			continue
		}
		fi, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("script: %w", err)
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("script %s is not an executable file", path)
		}
		if !h.AllowInsecure {
			if err := checkOwnerOnly(path); err != nil {
				return fmt.Errorf("script: %w", err)
			}
		}
	}
	return nil
}

// Freeze runs the pre script.
func (h *ScriptHook) Freeze(ctx context.Context, run *Run) error {
	return h.runScript(ctx, run, h.Config.PreScriptLocation, h.Config.PreScriptParams, h.Config.PreScriptNoOfRetries)
}

// Thaw runs the post script.
func (h *ScriptHook) Thaw(ctx context.Context, run *Run) error {
	return h.runScript(ctx, run, h.Config.PostScriptLocation, h.Config.PostScriptParams, h.Config.PostScriptNoOfRetries)
}

// ScriptError is a script that failed every attempt.
type ScriptError struct {
	Script   string
	ExitCode int // -1 when it did not exit (timeout, could not start)
	Attempts int
	Output   string
	Err      error
}

func (e *ScriptError) Error() string {
	msg := fmt.Sprintf("script %s failed after %d attempt(s)", e.Script, e.Attempts)
	if e.ExitCode >= 0 {
		msg += fmt.Sprintf(": exit status %d", e.ExitCode)
	} else if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if out := bytes.TrimSpace([]byte(e.Output)); len(out) > 0 {
		if len(out) > 200 {
			out = append(out[:200:200], "…"...)
		}
		msg += fmt.Sprintf(" (output: %q)", out)
	}
	return msg
}

func (e *ScriptError) Unwrap() error { return e.Err }

func (h *ScriptHook) runScript(ctx context.Context, run *Run, path string, params []string, retries int) error {
	if path == "" {
		return nil
	}
	run.Command, run.Params = path, params
	timeout := time.Duration(h.Config.TimeoutInSeconds) * time.Second
	var last *ScriptError
	for attempt := 1; attempt <= retries+1; attempt++ {
		run.Attempts = attempt
		code, output, err := runOnce(ctx, path, params, timeout)
		run.ExitCode, run.Output = &code, output
		if err == nil {
			return nil
		}
		last = &ScriptError{Script: path, ExitCode: code, Attempts: attempt, Output: output, Err: err}
		if ctx.Err() != nil {
			break
		}
	}
	return last
}

// runOnce runs the script once and returns its exit code (-1 if it did not
// exit by itself) and its combined output, at most maxScriptOutput bytes.
func runOnce(ctx context.Context, path string, params []string, timeout time.Duration) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, params...)
	out := &limitedBuffer{max: maxScriptOutput}
	cmd.Stdout, cmd.Stderr = out, out
	// The script gets its own process group so that a timeout kills the
	// script and everything it started, not just the script.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		return -1, out.String(), fmt.Errorf("timed out after %s", timeout)
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() >= 0 {
		return exit.ExitCode(), out.String(), err
	}
	if err != nil {
		return -1, out.String(), err
	}
	return 0, out.String(), nil
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	buf bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *limitedBuffer) String() string { return b.buf.String() }
