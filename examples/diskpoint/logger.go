package main

import "log/slog"

// logger is where the library's log lines go: stderr, as text. Warnings
// (a damaged index file worked around, a failed post script) always show;
// -v adds what the library reports at info level.
func (e *env) logger() *slog.Logger {
	level := slog.LevelWarn
	if e.verbose {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
}
