package consistency

import "fmt"

// Mode is a restore point's consistency.
type Mode string

const (
	// Crash: every disk captured at one instant, as after a power loss.
	Crash Mode = "crash"
	// FileSystem: file systems frozen (flushed and still) during capture.
	FileSystem Mode = "filesystem"
	// Application: applications quiesced, then file systems frozen.
	Application Mode = "application"
	// Inconsistent is never asked for, only recorded: the disks were not
	// captured at one instant (a disk read while in use, or several disks
	// captured one after another with nothing holding them still), so the
	// restore point may hold states that never existed together, which
	// even a journal replay cannot repair. The restore point says why.
	Inconsistent Mode = "inconsistent"
)

// ParseMode reads the name of a mode to ask for; "" means Crash.
// Inconsistent is refused: it is what a restore point can turn out to be,
// never what a caller asks for.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case "", Crash:
		return Crash, nil
	case FileSystem, Application:
		return Mode(s), nil
	}
	return "", fmt.Errorf("consistency mode %q: want crash, filesystem or application", s)
}

// Level is the kind of quiescing a hook does; a mode runs the hooks of its
// level and every level below it.
type Level int

const (
	// PauseLevel hooks stop a VM's I/O for the instant of capture (a
	// hypervisor's pause); they run in every mode, innermost.
	PauseLevel Level = iota
	// FileSystemLevel hooks freeze file systems; filesystem and application modes.
	FileSystemLevel
	// ApplicationLevel hooks quiesce applications; application mode only, outermost.
	ApplicationLevel
)

func (l Level) String() string {
	switch l {
	case PauseLevel:
		return "pause"
	case FileSystemLevel:
		return "filesystem"
	case ApplicationLevel:
		return "application"
	}
	return fmt.Sprintf("level(%d)", int(l))
}

// level is the highest hook level the mode runs.
func (m Mode) level() Level {
	switch m {
	case Application:
		return ApplicationLevel
	case FileSystem:
		return FileSystemLevel
	}
	return PauseLevel
}

// modeOf is the mode a level's hooks achieve.
func modeOf(l Level) Mode {
	switch l {
	case ApplicationLevel:
		return Application
	case FileSystemLevel:
		return FileSystem
	}
	return Crash
}
