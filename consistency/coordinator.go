package consistency

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"time"
)

// Defaults for the Coordinator.
const (
	DefaultMaxFreeze    = 10 * time.Second
	DefaultReadyTimeout = time.Minute
	// thawTimeout bounds one thaw call; scripts have their own timeouts.
	thawTimeout = 10 * time.Minute
)

// OnFailure says what happens when a hook's Freeze fails.
type OnFailure int

const (
	// FallBack takes the restore point one level weaker (application ->
	// filesystem -> crash) and records why (Azure's continueBackupOnFailure).
	FallBack OnFailure = iota
	// Fail fails the create: nothing is captured, everything is thawed.
	Fail
	// Skip returns a *SkippedError: no restore point, and no error to alarm on.
	Skip
)

// Errors the coordinator returns; test with errors.Is.
var (
	ErrNotReady      = errors.New("hooks not ready")
	ErrFreezeTimeout = errors.New("capture overran the maximum freeze time")
	ErrSkipped       = errors.New("restore point skipped")
)

// SkippedError is returned under the Skip policy when quiescing failed.
type SkippedError struct {
	Requested Mode
	Reason    string
}

func (e *SkippedError) Error() string {
	return fmt.Sprintf("%s-consistent restore point skipped: %s", e.Requested, e.Reason)
}

func (e *SkippedError) Unwrap() error { return ErrSkipped }

// Coordinator runs hooks around a capture. Its zero value runs no hooks
// with the defaults.
type Coordinator struct {
	Hooks []Hook
	// MaxFreeze bounds the freeze window, from the first file-system freeze
	// to the last thaw; past it everything is thawed and the capture fails.
	MaxFreeze time.Duration
	// ReadyTimeout bounds the wait for every hook to be ready.
	ReadyTimeout time.Duration
	// OnFailure says what to do when a hook fails to freeze.
	OnFailure OnFailure
	// Log, if set, gets every hook run as it ends.
	Log func(Run)
}

// Outcome is what a Run achieved.
type Outcome struct {
	Requested Mode
	// Achieved is what the hooks achieved, derived from what ran and
	// succeeded (see [Judge]), assuming the capture took every disk at one
	// instant; a create judges it again with how its disks were captured.
	Achieved Mode
	// FallbackReason says why Achieved is weaker than Requested.
	FallbackReason string
	// ApplicationFailed: application hooks failed (and were fallen back
	// from), or a post script failed after the capture.
	ApplicationFailed bool
	// ApplicationQuiesced: application hooks ran, and every one had
	// quiesced when the disks were captured.
	ApplicationQuiesced bool
	// Hold is what held the disks still during the capture.
	Hold Hold
	// Warnings are failures that did not spoil the capture: a post script
	// that failed after the disks were captured while quiesced.
	Warnings []string
	// FreezeWindow is how long file systems or I/O were held still.
	FreezeWindow time.Duration
	Runs         []Run

	configured [ApplicationLevel + 1]int // hooks the mode runs, per level
	failure    string                    // why hooks failed and were fallen back from
}

// Run is RunHeld for a capture that does not need to know what holds the
// disks still.
func (c *Coordinator) Run(ctx context.Context, mode Mode, capture func(ctx context.Context) error) (Outcome, error) {
	return c.RunHeld(ctx, mode, func(ctx context.Context, _ Hold) error { return capture(ctx) })
}

// RunHeld quiesces for mode and calls capture while everything is still:
// readiness gate, application hooks (pre scripts), then the freeze window
// (file-system freezes, pause hooks, capture, thaws) under a watchdog, then
// the application hooks' thaw (post scripts). capture is told what holds
// the disks still (only what is read inside the window while something
// does is read at one instant); it must only capture (reflink clones, a
// snapshotter, or reading quickly); its context is cancelled when the
// window is overrun. Every hook whose Freeze was called is thawed exactly
// once before RunHeld returns, whatever happens; only a capture that
// ignores its context can outlive it, and its result must then be
// discarded (RunHeld returned ErrFreezeTimeout).
//
// A post script that fails after a successful capture does not fail the
// run, unless OnFailure is Fail: the disks were captured while quiesced.
// It is an application failure (ApplicationFailed) and a warning.
func (c *Coordinator) RunHeld(ctx context.Context, mode Mode, capture func(ctx context.Context, hold Hold) error) (out Outcome, err error) {
	out = Outcome{Requested: mode, Achieved: mode}
	rec := &recorder{log: c.Log}
	frozen := &frozenStack{rec: rec, ctx: context.WithoutCancel(ctx)}
	defer func() {
		// Whatever happened, nothing stays frozen.
		if thawErr := frozen.thaw(func(Level) bool { return true }); thawErr != nil && err == nil {
			err = thawErr
		}
		out.Runs = rec.all()
	}()

	hooks := c.hooksUpTo(mode.level())
	for _, h := range hooks {
		if l := h.Level(); l >= PauseLevel && l <= ApplicationLevel {
			out.configured[l]++
		}
	}
	if err := c.waitReady(ctx, hooks, rec); err != nil {
		return out, err
	}

	// Outside the window: application hooks (pre scripts).
	if err := c.quiesce(ctx, &out, frozen, hooks, ApplicationLevel); err != nil {
		return out, err
	}

	maxFreeze := c.MaxFreeze
	if maxFreeze <= 0 {
		maxFreeze = DefaultMaxFreeze
	}
	start := time.Now()
	captureCtx, cancelCapture := context.WithCancelCause(ctx)
	defer cancelCapture(nil)
	inner := func(l Level) bool { return l <= FileSystemLevel }
	watchdog := time.AfterFunc(maxFreeze, func() {
		cancelCapture(ErrFreezeTimeout)
		frozen.thaw(inner) // does not wait for the capture
	})
	defer watchdog.Stop()

	err = c.quiesce(captureCtx, &out, frozen, hooks, FileSystemLevel)
	if err == nil {
		err = c.pause(captureCtx, frozen, hooks)
	}
	if err == nil {
		// What still holds after any fallback: a level fallen back from
		// was thawed.
		out.ApplicationQuiesced = out.Achieved == Application && out.configured[ApplicationLevel] > 0
		out.Hold = Hold{
			FileSystemsFrozen: out.Achieved.level() >= FileSystemLevel && out.configured[FileSystemLevel] > 0,
			Paused:            out.configured[PauseLevel] > 0,
		}
		err = runCapture(captureCtx, out.Hold, capture)
	}
	watchdog.Stop()
	if thawErr := frozen.thaw(inner); thawErr != nil && err == nil {
		err = thawErr
	}
	out.FreezeWindow = time.Since(start)
	if cause := context.Cause(captureCtx); errors.Is(cause, ErrFreezeTimeout) {
		err = fmt.Errorf("%w (%s): thawed; use reflink capture or a snapshotter for disks this large", ErrFreezeTimeout, maxFreeze)
	}
	if err != nil {
		return out, err
	}
	// Post scripts: only application hooks are left to thaw.
	if c.OnFailure == Fail {
		if thawErr := frozen.thaw(func(Level) bool { return true }); thawErr != nil {
			return out, thawErr
		}
	} else if thawErr := frozen.thawExcused(isApplication); thawErr != nil {
		c.postFailed(&out, thawErr, "the disks were captured while quiesced")
	}
	out.Achieved, out.FallbackReason = Judge(out, Capture{Atomic: true})
	return out, nil
}

// postFailed records application hooks whose thaw (post script) failed
// as an application failure and a warning.
func (c *Coordinator) postFailed(out *Outcome, err error, when string) {
	out.ApplicationFailed = true
	out.Warnings = append(out.Warnings, fmt.Sprintf("post script failed (%s): %v", when, err))
}

func (c *Coordinator) hooksUpTo(level Level) []Hook {
	var hooks []Hook
	for _, h := range c.Hooks {
		if h.Level() <= level {
			hooks = append(hooks, h)
		}
	}
	return hooks
}

func atLevel(hooks []Hook, level Level) []Hook {
	var out []Hook
	for _, h := range hooks {
		if h.Level() == level {
			out = append(out, h)
		}
	}
	return out
}

// waitReady is the readiness gate: no hook runs until every one is ready.
func (c *Coordinator) waitReady(ctx context.Context, hooks []Hook, rec *recorder) error {
	timeout := c.ReadyTimeout
	if timeout <= 0 {
		timeout = DefaultReadyTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, h := range hooks {
		if err := rec.call(ctx, h, "ready", h.Ready); err != nil {
			if ctx.Err() == context.DeadlineExceeded {
				return fmt.Errorf("%w: %s not ready after %s: %v", ErrNotReady, h.Name(), timeout, err)
			}
			return fmt.Errorf("%w: %s: %v", ErrNotReady, h.Name(), err)
		}
	}
	return nil
}

// quiesce freezes the hooks of one level. On failure it applies the policy:
// under FallBack it thaws everything frozen so far and lowers the
// achieved mode below level.
func (c *Coordinator) quiesce(ctx context.Context, out *Outcome, frozen *frozenStack, hooks []Hook, level Level) error {
	if out.Achieved.level() < level {
		return nil // fallen below this level already
	}
	for _, h := range atLevel(hooks, level) {
		err := frozen.freeze(ctx, h)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return err
		}
		reason := fmt.Sprintf("%s hook %s failed: %v", level, h.Name(), err)
		switch c.OnFailure {
		case Fail:
			return fmt.Errorf("%s-consistent restore point: %s", out.Requested, reason)
		case Skip:
			return &SkippedError{Requested: out.Requested, Reason: reason}
		}
		// Thaw everything frozen so far, innermost first. A post script
		// that fails now is one more application failure; a file system
		// that does not thaw is an error.
		if thawErr := frozen.thaw(func(l Level) bool { return l < ApplicationLevel }); thawErr != nil {
			return thawErr
		}
		if thawErr := frozen.thawExcused(isApplication); thawErr != nil {
			c.postFailed(out, thawErr, "after "+reason)
		}
		out.Achieved = modeOf(level - 1)
		out.failure = strings.Join(nonEmpty([]string{out.failure, reason}), "; ")
		out.FallbackReason = out.failure
		out.ApplicationFailed = out.ApplicationFailed || level == ApplicationLevel
		return nil
	}
	return nil
}

// pause runs the pause hooks: a failure there means the disks cannot be
// captured at one instant, so there is nothing weaker to fall back to.
func (c *Coordinator) pause(ctx context.Context, frozen *frozenStack, hooks []Hook) error {
	for _, h := range atLevel(hooks, PauseLevel) {
		if err := frozen.freeze(ctx, h); err != nil {
			return fmt.Errorf("pause hook %s failed, disks cannot be captured at one instant: %w", h.Name(), err)
		}
	}
	return nil
}

func runCapture(ctx context.Context, hold Hold, capture func(context.Context, Hold) error) error {
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("capture panicked: %v\n%s", p, debug.Stack())
			}
		}()
		done <- capture(ctx, hold)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func isApplication(l Level) bool { return l == ApplicationLevel }

// frozenStack remembers which hooks were frozen, to thaw each exactly once,
// in reverse order, from whichever goroutine gets there first.
type frozenStack struct {
	rec *recorder
	ctx context.Context // for thaws: not cancelled when the caller's is

	mu    sync.Mutex
	items []*frozenHook
}

type frozenHook struct {
	hook   Hook
	frozen chan struct{} // closed when Freeze has returned
	once   sync.Once
	err    error
}

func (s *frozenStack) freeze(ctx context.Context, h Hook) error {
	fh := &frozenHook{hook: h, frozen: make(chan struct{})}
	s.mu.Lock()
	s.items = append(s.items, fh)
	s.mu.Unlock()
	defer close(fh.frozen)
	return s.rec.call(ctx, h, "freeze", h.Freeze)
}

// thaw thaws, newest first, every frozen hook whose level which selects.
func (s *frozenStack) thaw(which func(Level) bool) error {
	s.mu.Lock()
	items := append([]*frozenHook(nil), s.items...)
	s.mu.Unlock()
	var errs []error
	for i := len(items) - 1; i >= 0; i-- {
		fh := items[i]
		if !which(fh.hook.Level()) {
			continue
		}
		fh.once.Do(func() {
			// A thaw racing a freeze still in progress (the watchdog fired
			// during it) waits for it, so that it undoes all of it.
			<-fh.frozen
			ctx, cancel := context.WithTimeout(s.ctx, thawTimeout)
			defer cancel()
			if err := s.rec.call(ctx, fh.hook, "thaw", fh.hook.Thaw); err != nil {
				fh.err = fmt.Errorf("thaw %s: %w", fh.hook.Name(), err)
			}
		})
		if fh.err != nil {
			errs = append(errs, fh.err)
		}
	}
	return errors.Join(errs...)
}

// thawExcused is thaw for hooks whose failure to thaw the caller turns
// into a warning: their errors are returned by this call only, never again
// by a later thaw. Only the caller's goroutine may thaw these hooks.
func (s *frozenStack) thawExcused(which func(Level) bool) error {
	err := s.thaw(which)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, fh := range s.items {
		if which(fh.hook.Level()) {
			fh.err = nil
		}
	}
	return err
}

// recorder calls hooks, turning panics into errors, and keeps their runs.
type recorder struct {
	log  func(Run)
	mu   sync.Mutex
	runs []Run
}

func (r *recorder) call(ctx context.Context, h Hook, phase string, f func(context.Context, *Run) error) (err error) {
	run := Run{Time: time.Now().UTC(), Hook: h.Name(), Level: h.Level().String(), Phase: phase}
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%s %s panicked: %v", h.Name(), phase, p)
			run.Outcome = "panic"
		}
		run.DurationMS = time.Since(start).Milliseconds()
		switch {
		case run.Outcome != "":
		case err == nil:
			run.Outcome = "ok"
		case errors.Is(err, context.DeadlineExceeded) || ctx.Err() == context.DeadlineExceeded:
			run.Outcome = "timeout"
		default:
			run.Outcome = "failed"
		}
		if err != nil {
			run.Error = err.Error()
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		r.runs = append(r.runs, run)
		if r.log != nil {
			r.log(run) // one at a time, though the watchdog may thaw concurrently
		}
	}()
	return f(ctx, &run)
}

func (r *recorder) all() []Run {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Run(nil), r.runs...)
}
