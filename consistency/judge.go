package consistency

import (
	"fmt"
	"strings"
	"time"
)

// Hold says what held the disks still while they were captured.
type Hold struct {
	// FileSystemsFrozen: file-system hooks ran, and every one froze and
	// stayed frozen through the capture.
	FileSystemsFrozen bool
	// Paused: pause hooks ran, and every one held I/O still through the
	// capture.
	Paused bool
}

// Still reports whether anything held the disks still: what is read
// inside the window is then read at one instant.
func (h Hold) Still() bool { return h.FileSystemsFrozen || h.Paused }

// Capture is how a create took its disks: the part of what happened that
// the hooks do not know and [Judge] needs.
type Capture struct {
	// Disks is how many disks were captured.
	Disks int
	// LiveRead names the disks that were read while in use: no clone, no
	// snapshot, and no hook held them still.
	LiveRead []string
	// Atomic: the capture took every disk at one instant by itself (a
	// snapshotter that snapshots all of a VM's disks atomically).
	Atomic bool
	// QuiescesFileSystems: the capture quiesced the disks' file systems
	// itself (a hypervisor's snapshot through a guest agent's freeze).
	QuiescesFileSystems bool
	// Spread is the time from the start of the first disk's capture to the
	// end of the last's.
	Spread time.Duration
}

// Judge derives the consistency a restore point achieved from what ran and
// succeeded, never from what was asked for (o.Requested), and says why it
// is weaker than that, if it is:
//
//   - Inconsistent when a disk was read while in use, or when several disks
//     were captured one after another with nothing holding them still;
//   - Application when application hooks ran and all succeeded, and the
//     disks were captured at one instant;
//   - FileSystem when file-system hooks froze (all of them, and at least
//     one ran), or the capture quiesced the file systems itself;
//   - Crash otherwise.
//
// The caller vouches that the file-system hooks freeze the file systems of
// the disks captured: nothing here can map mount points to disks.
func Judge(o Outcome, c Capture) (Mode, string) {
	var why []string
	add := func(s string) {
		for _, w := range why {
			if w == s {
				return
			}
		}
		why = append(why, s)
	}
	if o.failure != "" {
		add(o.failure)
	}
	mode := hooksAchieved(o, c, add)
	held := o.Hold.Still() || c.Atomic
	switch {
	case len(c.LiveRead) > 0:
		add(fmt.Sprintf("%s read while in use over %s: no reflink clone, snapshotter, file-system freeze or pause hook held %s still, so the restore point is not even crash-consistent",
			disksNamed(c.LiveRead), roundSpread(c.Spread), pronoun(len(c.LiveRead))))
		mode = Inconsistent
	case c.Disks > 1 && !held:
		add(fmt.Sprintf("%d disks captured one after another over %s with nothing holding them still, not at one instant: give a pause hook, an atomic snapshotter or file-system freeze hooks",
			c.Disks, roundSpread(c.Spread)))
		mode = Inconsistent
	}
	return mode, strings.Join(why, "; ")
}

// hooksAchieved is the mode the hooks (and a quiescing capture) achieved,
// if the disks were captured at one instant; it adds why that is less
// than asked.
func hooksAchieved(o Outcome, c Capture, why func(string)) Mode {
	if o.Requested == Application {
		if o.ApplicationQuiesced {
			return Application
		}
		if o.configured[ApplicationLevel] == 0 {
			why("no application hooks configured")
		}
	}
	if o.Requested == Application || o.Requested == FileSystem {
		if o.Hold.FileSystemsFrozen || c.QuiescesFileSystems {
			return FileSystem
		}
		if o.configured[FileSystemLevel] == 0 {
			why("no file-system freeze hooks configured")
		}
	}
	return Crash
}

func disksNamed(names []string) string {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = fmt.Sprintf("%q", n)
	}
	if len(names) == 1 {
		return "disk " + quoted[0] + " was"
	}
	return "disks " + strings.Join(quoted, ", ") + " were"
}

func pronoun(n int) string {
	if n == 1 {
		return "it"
	}
	return "them"
}

func roundSpread(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(10 * time.Millisecond)
	}
	return d.Round(time.Microsecond * 100)
}
