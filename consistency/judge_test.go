package consistency_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/consistency"
)

// The mode a run achieves comes from the hooks that ran and succeeded,
// never from the mode asked for.
func TestAchievedComesFromWhatRan(t *testing.T) {
	app := func(ev *events) consistency.Hook { return hook(ev, "app", consistency.ApplicationLevel, nil) }
	fs := func(ev *events) consistency.Hook { return hook(ev, "fs", consistency.FileSystemLevel, nil) }
	pause := func(ev *events) consistency.Hook { return hook(ev, "pause", consistency.PauseLevel, nil) }
	for _, tc := range []struct {
		name     string
		mode     consistency.Mode
		hooks    []func(*events) consistency.Hook
		achieved consistency.Mode
		why      string
	}{
		{"application, no hooks at all", consistency.Application, nil, consistency.Crash, "no application hooks configured; no file-system freeze hooks configured"},
		{"application, freeze only", consistency.Application, []func(*events) consistency.Hook{fs}, consistency.FileSystem, "no application hooks configured"},
		{"application, pause only", consistency.Application, []func(*events) consistency.Hook{pause}, consistency.Crash, "no application hooks configured; no file-system freeze hooks configured"},
		{"application, app hook only", consistency.Application, []func(*events) consistency.Hook{app}, consistency.Application, ""},
		{"filesystem, no hooks", consistency.FileSystem, nil, consistency.Crash, "no file-system freeze hooks configured"},
		{"filesystem, pause only", consistency.FileSystem, []func(*events) consistency.Hook{pause}, consistency.Crash, "no file-system freeze hooks configured"},
		{"filesystem, freeze", consistency.FileSystem, []func(*events) consistency.Hook{fs}, consistency.FileSystem, ""},
		{"crash, no hooks", consistency.Crash, nil, consistency.Crash, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := &events{}
			var hooks []consistency.Hook
			for _, h := range tc.hooks {
				hooks = append(hooks, h(ev))
			}
			c := consistency.Coordinator{Hooks: hooks}
			out, err := c.Run(context.Background(), tc.mode, captureInto(ev))
			if err != nil {
				t.Fatal(err)
			}
			if out.Achieved != tc.achieved || out.FallbackReason != tc.why {
				t.Errorf("achieved %q because %q; want %q because %q", out.Achieved, out.FallbackReason, tc.achieved, tc.why)
			}
			if out.ApplicationFailed {
				t.Error("hooks that are not configured counted as an application failure")
			}
		})
	}
}

// The capture is told what holds the disks still, as it is when the
// capture runs: a file-system hook that failed and was fallen back from
// holds nothing.
func TestCaptureIsToldWhatHolds(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mode   consistency.Mode
		fsFail error
		want   consistency.Hold
	}{
		{"frozen and paused", consistency.FileSystem, nil, consistency.Hold{FileSystemsFrozen: true, Paused: true}},
		{"freeze failed", consistency.FileSystem, errors.New("EBUSY"), consistency.Hold{Paused: true}},
		{"crash runs no freeze", consistency.Crash, nil, consistency.Hold{Paused: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := &events{}
			c := consistency.Coordinator{Hooks: []consistency.Hook{
				hook(ev, "fs", consistency.FileSystemLevel, tc.fsFail),
				hook(ev, "pause", consistency.PauseLevel, nil),
			}}
			var got consistency.Hold
			out, err := c.RunHeld(context.Background(), tc.mode, func(_ context.Context, h consistency.Hold) error { got = h; return nil })
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want || out.Hold != tc.want {
				t.Errorf("capture told %+v, outcome says %+v; want %+v", got, out.Hold, tc.want)
			}
		})
	}
}

// A post script that fails after freeze, capture and thaw succeeded keeps
// the capture: a warning and an application failure, not an error; under
// Fail it is still an error.
func TestPostScriptFailureAfterCaptureIsAWarning(t *testing.T) {
	for _, policy := range []consistency.OnFailure{consistency.FallBack, consistency.Skip, consistency.Fail} {
		ev := &events{}
		app := hook(ev, "app", consistency.ApplicationLevel, nil)
		app.ThawFunc = func(context.Context) error { ev.add("app.thaw"); return errors.New("post script exit 3") }
		c := consistency.Coordinator{Hooks: []consistency.Hook{app, hook(ev, "fs", consistency.FileSystemLevel, nil)}, OnFailure: policy}
		out, err := c.Run(context.Background(), consistency.Application, captureInto(ev))
		if want := "app.ready fs.ready app.freeze fs.freeze capture fs.thaw app.thaw"; ev.String() != want {
			t.Errorf("policy %d: events %s, want %s", policy, ev, want)
		}
		if policy == consistency.Fail {
			if err == nil || !strings.Contains(err.Error(), "post script exit 3") {
				t.Errorf("Fail: %v, want the post script's error", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("policy %d: %v", policy, err)
		}
		if out.Achieved != consistency.Application || !out.ApplicationFailed || len(out.Warnings) != 1 ||
			!strings.Contains(out.Warnings[0], "post script exit 3") || !strings.Contains(out.Warnings[0], "captured while quiesced") {
			t.Errorf("policy %d: outcome %+v", policy, out)
		}
		var s consistency.FallbackState
		s.Record(out, 3, time.Now())
		if m, why := s.Decide(consistency.Application); m != consistency.FileSystem || !strings.Contains(why, "post script exit 3") {
			t.Errorf("policy %d: after a failed post script the next request is %s (%q), want filesystem, saying why", policy, m, why)
		}
	}
}

// A post script that fails while a failed pre script is fallen back from
// is one more application failure, not the end of the create.
func TestPostScriptFailureDuringFallback(t *testing.T) {
	ev := &events{}
	app := hook(ev, "app", consistency.ApplicationLevel, errors.New("pre script exit 2"))
	app.ThawFunc = func(context.Context) error { ev.add("app.thaw"); return errors.New("post script exit 3") }
	c := consistency.Coordinator{Hooks: []consistency.Hook{app, hook(ev, "fs", consistency.FileSystemLevel, nil)}}
	out, err := c.Run(context.Background(), consistency.Application, captureInto(ev))
	if err != nil {
		t.Fatal(err)
	}
	if out.Achieved != consistency.FileSystem || !strings.Contains(out.FallbackReason, "pre script exit 2") ||
		len(out.Warnings) != 1 || !strings.Contains(out.Warnings[0], "post script exit 3") || !out.ApplicationFailed {
		t.Errorf("outcome %+v", out)
	}
	if n := ev.count("app.thaw"); n != 1 {
		t.Errorf("application hook thawed %d times", n)
	}
}

// Judge lowers what the hooks achieved to inconsistent when the disks were
// not captured at one instant, and raises nothing it was not given.
func TestJudgeCapture(t *testing.T) {
	ev := &events{}
	c := consistency.Coordinator{Hooks: []consistency.Hook{
		hook(ev, "app", consistency.ApplicationLevel, nil), hook(ev, "fs", consistency.FileSystemLevel, nil),
	}}
	appFS, err := c.Run(context.Background(), consistency.Application, captureInto(ev))
	if err != nil {
		t.Fatal(err)
	}
	appOnly, err := (&consistency.Coordinator{Hooks: []consistency.Hook{hook(ev, "app", consistency.ApplicationLevel, nil)}}).
		Run(context.Background(), consistency.Application, captureInto(ev))
	if err != nil {
		t.Fatal(err)
	}
	paused, err := (&consistency.Coordinator{Hooks: []consistency.Hook{hook(ev, "pause", consistency.PauseLevel, nil)}}).
		Run(context.Background(), consistency.FileSystem, captureInto(ev))
	if err != nil {
		t.Fatal(err)
	}
	bare, err := (&consistency.Coordinator{}).Run(context.Background(), consistency.Crash, captureInto(ev))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		out  consistency.Outcome
		cap  consistency.Capture
		want consistency.Mode
		why  string
	}{
		{"one disk cloned, no hooks", bare, consistency.Capture{Disks: 1}, consistency.Crash, ""},
		{"one disk read live", bare, consistency.Capture{Disks: 1, LiveRead: []string{"os"}, Spread: 3 * time.Second}, consistency.Inconsistent, `disk "os" was read while in use over 3s`},
		{"two disks cloned one after another", bare, consistency.Capture{Disks: 2, Spread: 4 * time.Millisecond}, consistency.Inconsistent, "2 disks captured one after another over 4ms"},
		{"two disks, atomic snapshotter", bare, consistency.Capture{Disks: 2, Atomic: true}, consistency.Crash, ""},
		{"two disks under a pause", paused, consistency.Capture{Disks: 2}, consistency.Crash, "no file-system freeze hooks configured"},
		{"snapshotter quiesces file systems", paused, consistency.Capture{Disks: 2, Atomic: true, QuiescesFileSystems: true}, consistency.FileSystem, ""},
		{"application, frozen, two disks", appFS, consistency.Capture{Disks: 2}, consistency.Application, ""},
		{"application hooks, one disk cloned", appOnly, consistency.Capture{Disks: 1}, consistency.Application, ""},
		{"application hooks, two disks cloned apart", appOnly, consistency.Capture{Disks: 2, Spread: time.Millisecond}, consistency.Inconsistent, "not at one instant"},
		{"application hooks, disk read live", appOnly, consistency.Capture{Disks: 1, LiveRead: []string{"db"}}, consistency.Inconsistent, "read while in use"},
	} {
		got, why := consistency.Judge(tc.out, tc.cap)
		if got != tc.want || (tc.why == "" && why != "") || !strings.Contains(why, tc.why) {
			t.Errorf("%s: %q because %q; want %q because %q", tc.name, got, why, tc.want, tc.why)
		}
	}
}

func TestInconsistentCannotBeAskedFor(t *testing.T) {
	if _, err := consistency.ParseMode("inconsistent"); err == nil {
		t.Error("inconsistent accepted as a mode to ask for")
	}
}

// When application hooks fail and then file-system hooks fail too, the
// reason names both.
func TestBothFailuresAreReasons(t *testing.T) {
	ev := &events{}
	c := consistency.Coordinator{Hooks: []consistency.Hook{
		hook(ev, "app", consistency.ApplicationLevel, errors.New("pre script exit 3")),
		hook(ev, "fs", consistency.FileSystemLevel, errors.New("EBUSY")),
	}}
	out, err := c.Run(context.Background(), consistency.Application, captureInto(ev))
	if err != nil {
		t.Fatal(err)
	}
	if out.Achieved != consistency.Crash || !strings.Contains(out.FallbackReason, "pre script exit 3") || !strings.Contains(out.FallbackReason, "EBUSY") {
		t.Errorf("achieved %q because %q", out.Achieved, out.FallbackReason)
	}
}
