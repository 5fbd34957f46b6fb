package consistency

import (
	"context"
	"time"
)

// Hook quiesces something for a restore point. Freeze and Thaw come in
// pairs: once Freeze has been called, Thaw will be, exactly once, even if
// Freeze failed (a hook that froze half of its file systems thaws that half).
// Every method gets a *Run to fill in with what it did (command, output,
// exit code, attempts); the coordinator adds timing and outcome and logs it.
type Hook interface {
	// Name identifies the hook in logs and errors.
	Name() string
	// Level says which modes run the hook.
	Level() Level
	// Ready returns nil once the hook can run (the analogue of an Azure
	// extension being provisioned); it may wait, until ctx is done.
	Ready(ctx context.Context, run *Run) error
	// Freeze quiesces: runs a pre script, freezes file systems, pauses I/O.
	Freeze(ctx context.Context, run *Run) error
	// Thaw undoes Freeze: runs a post script, thaws, resumes.
	Thaw(ctx context.Context, run *Run) error
}

// Run is the record of one call of a hook, kept in the collection's hook log.
type Run struct {
	Time       time.Time `json:"time"`
	Hook       string    `json:"hook"`
	Level      string    `json:"level"`
	Phase      string    `json:"phase"` // ready, freeze or thaw
	Command    string    `json:"command,omitempty"`
	Params     []string  `json:"params,omitempty"`
	Attempts   int       `json:"attempts,omitempty"`
	ExitCode   *int      `json:"exit_code,omitempty"`
	Output     string    `json:"output,omitempty"`
	DurationMS int64     `json:"duration_ms"`
	Outcome    string    `json:"outcome"` // ok, failed, timeout, panic
	Error      string    `json:"error,omitempty"`
}

// FuncHook is a hook made of functions in the same process: an application
// that flushes itself, or a hypervisor pausing a VM (at PauseLevel). A nil
// function does nothing.
type FuncHook struct {
	HookName   string
	HookLevel  Level
	ReadyFunc  func(ctx context.Context) error
	FreezeFunc func(ctx context.Context) error
	ThawFunc   func(ctx context.Context) error
}

var _ Hook = (*FuncHook)(nil)

// Name returns HookName.
func (h *FuncHook) Name() string { return h.HookName }

// Level returns HookLevel.
func (h *FuncHook) Level() Level { return h.HookLevel }

// Ready calls ReadyFunc.
func (h *FuncHook) Ready(ctx context.Context, _ *Run) error { return call(ctx, h.ReadyFunc) }

// Freeze calls FreezeFunc.
func (h *FuncHook) Freeze(ctx context.Context, _ *Run) error { return call(ctx, h.FreezeFunc) }

// Thaw calls ThawFunc.
func (h *FuncHook) Thaw(ctx context.Context, _ *Run) error { return call(ctx, h.ThawFunc) }

func call(ctx context.Context, f func(context.Context) error) error {
	if f == nil {
		return nil
	}
	return f(ctx)
}
