package chain

import "log/slog"

// discardLogger is the logger of a repository no one gave one: the
// library never writes to slog's global default, which belongs to the
// program that imports it.
var discardLogger = slog.New(slog.DiscardHandler)

// SetLogger sets where the repository reports what it works around (a
// damaged index file read from pack headers, a damaged restore point GC was
// told to ignore); nil, the default, means silent. Such things are also
// reported where they matter (Verify's report, GC's report), so the log is
// for operators who want to see them as they happen.
func (r *Repository) SetLogger(l *slog.Logger) {
	if l == nil {
		l = discardLogger
	}
	r.logger.Store(l)
}

// Logger returns the repository's logger (never nil).
func (r *Repository) Logger() *slog.Logger {
	if l := r.logger.Load(); l != nil {
		return l
	}
	return discardLogger
}
