package consistency_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/consistency"
)

// events records what hooks and the capture did, in order.
type events struct {
	mu  sync.Mutex
	log []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log = append(e.log, s)
}

func (e *events) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.log, " ")
}

func (e *events) count(s string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, x := range e.log {
		if x == s {
			n++
		}
	}
	return n
}

// hook makes a FuncHook that records its calls; failFreeze makes Freeze fail.
func hook(ev *events, name string, level consistency.Level, failFreeze error) *consistency.FuncHook {
	return &consistency.FuncHook{
		HookName: name, HookLevel: level,
		ReadyFunc:  func(context.Context) error { ev.add(name + ".ready"); return nil },
		FreezeFunc: func(context.Context) error { ev.add(name + ".freeze"); return failFreeze },
		ThawFunc:   func(context.Context) error { ev.add(name + ".thaw"); return nil },
	}
}

func allHooks(ev *events) []consistency.Hook {
	return []consistency.Hook{
		hook(ev, "app", consistency.ApplicationLevel, nil),
		hook(ev, "fs", consistency.FileSystemLevel, nil),
		hook(ev, "pause", consistency.PauseLevel, nil),
	}
}

func captureInto(ev *events) func(context.Context) error {
	return func(context.Context) error { ev.add("capture"); return nil }
}

func TestOrderPerMode(t *testing.T) {
	for _, tc := range []struct {
		mode consistency.Mode
		want string
	}{
		{consistency.Application, "app.ready fs.ready pause.ready app.freeze fs.freeze pause.freeze capture pause.thaw fs.thaw app.thaw"},
		{consistency.FileSystem, "fs.ready pause.ready fs.freeze pause.freeze capture pause.thaw fs.thaw"},
		{consistency.Crash, "pause.ready pause.freeze capture pause.thaw"},
	} {
		ev := &events{}
		var logged []consistency.Run
		c := consistency.Coordinator{Hooks: allHooks(ev), Log: func(r consistency.Run) { logged = append(logged, r) }}
		out, err := c.Run(context.Background(), tc.mode, captureInto(ev))
		if err != nil {
			t.Fatalf("%s: %v", tc.mode, err)
		}
		if ev.String() != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.mode, ev, tc.want)
		}
		if out.Achieved != tc.mode || out.FallbackReason != "" || out.FreezeWindow <= 0 {
			t.Errorf("%s: outcome %+v", tc.mode, out)
		}
		if len(logged) != len(out.Runs) || len(logged) != strings.Count(tc.want, ".") {
			t.Errorf("%s: %d runs logged, %d in outcome, want one per hook call", tc.mode, len(logged), len(out.Runs))
		}
	}
}

// A capture that never returns is cut off by the watchdog: everything is
// thawed within the maximum freeze time, and Run returns.
func TestWatchdogThawsHungCapture(t *testing.T) {
	ev := &events{}
	thawed := make(chan time.Time, 1)
	hooks := allHooks(ev)
	hooks[1].(*consistency.FuncHook).ThawFunc = func(context.Context) error { ev.add("fs.thaw"); thawed <- time.Now(); return nil }
	block := make(chan struct{})
	defer close(block)
	c := consistency.Coordinator{Hooks: hooks, MaxFreeze: 200 * time.Millisecond}
	start := time.Now()
	out, err := c.Run(context.Background(), consistency.Application, func(ctx context.Context) error {
		ev.add("capture")
		<-block // hangs, ignoring ctx
		return nil
	})
	if !errors.Is(err, consistency.ErrFreezeTimeout) {
		t.Fatalf("hung capture: %v, want ErrFreezeTimeout", err)
	}
	at := <-thawed
	if window := at.Sub(start); window < 200*time.Millisecond || window > 5*time.Second {
		t.Errorf("file system thawed %s after the start, want just after the 200ms maximum", window)
	}
	for _, h := range []string{"app", "fs", "pause"} {
		if n := ev.count(h + ".thaw"); n != 1 {
			t.Errorf("%s thawed %d times, want exactly once (%s)", h, n, ev)
		}
	}
	if out.FreezeWindow < 200*time.Millisecond {
		t.Errorf("freeze window %s shorter than the time it was held", out.FreezeWindow)
	}
}

func TestThawOnPanicCancelAndError(t *testing.T) {
	for _, tc := range []struct {
		name    string
		capture func(context.Context) error
		cancel  bool
		want    string
	}{
		{"panic", func(context.Context) error { panic("disk exploded") }, false, "disk exploded"},
		{"error", func(context.Context) error { return errors.New("clone failed") }, false, "clone failed"},
		{"cancel", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }, true, "canceled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := &events{}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			hooks := allHooks(ev)
			if tc.cancel { // cancel from inside the window, once everything is frozen
				hooks[2].(*consistency.FuncHook).FreezeFunc = func(context.Context) error { ev.add("pause.freeze"); cancel(); return nil }
			}
			c := consistency.Coordinator{Hooks: hooks}
			_, err := c.Run(ctx, consistency.Application, tc.capture)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tc.want)
			}
			for _, h := range []string{"app", "fs", "pause"} {
				if n := ev.count(h + ".thaw"); n != 1 {
					t.Errorf("%s thawed %d times (%s)", h, n, ev)
				}
			}
		})
	}
}

func TestHookPanicIsAFailureAndThaws(t *testing.T) {
	ev := &events{}
	hooks := allHooks(ev)
	hooks[1].(*consistency.FuncHook).FreezeFunc = func(context.Context) error { ev.add("fs.freeze"); panic("ioctl") }
	c := consistency.Coordinator{Hooks: hooks, OnFailure: consistency.Fail}
	_, err := c.Run(context.Background(), consistency.FileSystem, captureInto(ev))
	if err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("got %v", err)
	}
	if ev.count("fs.thaw") != 1 || ev.count("capture") != 0 {
		t.Errorf("events: %s", ev)
	}
}

func TestPolicies(t *testing.T) {
	boom := errors.New("pre script exit 3")
	for _, tc := range []struct {
		name     string
		policy   consistency.OnFailure
		failing  string
		mode     consistency.Mode
		achieved consistency.Mode
		events   string
		errIs    error
	}{
		{"app fails, fall back", consistency.FallBack, "app", consistency.Application, consistency.FileSystem,
			"app.ready fs.ready pause.ready app.freeze app.thaw fs.freeze pause.freeze capture pause.thaw fs.thaw", nil},
		{"fs fails, fall back", consistency.FallBack, "fs", consistency.Application, consistency.Crash,
			"app.ready fs.ready pause.ready app.freeze fs.freeze fs.thaw app.thaw pause.freeze capture pause.thaw", nil},
		{"app fails, fail", consistency.Fail, "app", consistency.Application, "",
			"app.ready fs.ready pause.ready app.freeze app.thaw", boom},
		{"app fails, skip", consistency.Skip, "app", consistency.Application, "",
			"app.ready fs.ready pause.ready app.freeze app.thaw", consistency.ErrSkipped},
		{"fs fails, fail", consistency.Fail, "fs", consistency.FileSystem, "",
			"fs.ready pause.ready fs.freeze fs.thaw", nil},
		{"pause fails", consistency.FallBack, "pause", consistency.Crash, "",
			"pause.ready pause.freeze pause.thaw", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := &events{}
			var hooks []consistency.Hook
			for _, h := range []struct {
				name  string
				level consistency.Level
			}{{"app", consistency.ApplicationLevel}, {"fs", consistency.FileSystemLevel}, {"pause", consistency.PauseLevel}} {
				var fail error
				if h.name == tc.failing {
					fail = boom
				}
				hooks = append(hooks, hook(ev, h.name, h.level, fail))
			}
			c := consistency.Coordinator{Hooks: hooks, OnFailure: tc.policy}
			out, err := c.Run(context.Background(), tc.mode, captureInto(ev))
			if ev.String() != tc.events {
				t.Errorf("events:\n got %s\nwant %s", ev, tc.events)
			}
			if tc.achieved == "" {
				if err == nil {
					t.Fatal("no error")
				}
				if tc.errIs != nil && !errors.Is(err, tc.errIs) && !strings.Contains(err.Error(), tc.errIs.Error()) {
					t.Errorf("error %v, want %v", err, tc.errIs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if out.Achieved != tc.achieved || !strings.Contains(out.FallbackReason, tc.failing) {
				t.Errorf("outcome %+v", out)
			}
			if out.ApplicationFailed != (tc.failing == "app") {
				t.Errorf("ApplicationFailed = %v", out.ApplicationFailed)
			}
		})
	}
}

func TestReadinessGate(t *testing.T) {
	ev := &events{}
	ready := make(chan struct{})
	hooks := allHooks(ev)
	hooks[0].(*consistency.FuncHook).ReadyFunc = func(ctx context.Context) error {
		select {
		case <-ready:
			ev.add("app.ready")
			return nil
		case <-ctx.Done():
			return fmt.Errorf("extension still provisioning: %w", ctx.Err())
		}
	}
	c := consistency.Coordinator{Hooks: hooks, ReadyTimeout: 100 * time.Millisecond}
	_, err := c.Run(context.Background(), consistency.Application, captureInto(ev))
	if !errors.Is(err, consistency.ErrNotReady) || !strings.Contains(err.Error(), "app") {
		t.Fatalf("not ready: %v, want ErrNotReady naming the hook", err)
	}
	if strings.Contains(ev.String(), "freeze") || strings.Contains(ev.String(), "capture") {
		t.Fatalf("something ran before every hook was ready: %s", ev)
	}
	// Once the hook is ready, creation goes ahead.
	close(ready)
	ev2 := &events{}
	c.Hooks = append(hooks[:1:1], allHooks(ev2)[1:]...)
	if _, err := c.Run(context.Background(), consistency.Application, captureInto(ev2)); err != nil {
		t.Fatal(err)
	}
	if ev2.count("capture") != 1 {
		t.Errorf("events: %s", ev2)
	}
}

// The fallback sequence: after a failure, three application requests are
// taken file-system-consistent; the fourth tries application again.
func TestFallbackState(t *testing.T) {
	var s consistency.FallbackState
	now := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	if m, why := s.Decide(consistency.Application); m != consistency.Application || why != "" {
		t.Fatalf("fresh state: %s %q", m, why)
	}
	s.Record(consistency.Outcome{ApplicationFailed: true, FallbackReason: "pre script exit 3"}, consistency.DefaultSkipAfterFailure, now)
	for i := range 3 {
		m, why := s.Decide(consistency.Application)
		if m != consistency.FileSystem || !strings.Contains(why, "pre script exit 3") {
			t.Fatalf("request %d after failure: %s %q", i+1, m, why)
		}
		if m, _ := s.Decide(consistency.FileSystem); m != consistency.FileSystem {
			t.Fatalf("filesystem requests are not counted")
		}
	}
	if m, _ := s.Decide(consistency.Application); m != consistency.Application {
		t.Fatalf("fourth request: %s, want application", m)
	}
}
