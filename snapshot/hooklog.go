package snapshot

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"sync"

	"github.com/diskpoint/diskpoint/consistency"
)

// hookLog collects a create's hook runs; they are stored as JSON lines in
// the repository, where an operator finds them (diskpoint hooks-log), and
// logged with slog as they happen.
type hookLog struct {
	mu    sync.Mutex
	lines []byte
}

func (l *hookLog) add(run consistency.Run) {
	line, err := json.Marshal(run)
	if err != nil {
		return
	}
	slog.Info("hook run", "hook", run.Hook, "phase", run.Phase, "outcome", run.Outcome, "duration_ms", run.DurationMS, "error", run.Error)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(append(l.lines, line...), '\n')
}

// saveHookLog stores the runs of the create that had restore point ID id
// (whether or not it succeeded). A log that cannot be saved is reported
// with slog; it does not fail the create.
func (c *Collection) saveHookLog(ctx context.Context, id string, l *hookLog) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lines) == 0 {
		return
	}
	if err := c.repo.chain.SaveHookLog(context.WithoutCancel(ctx), c.name, id, l.lines); err != nil {
		slog.Error("saving hook log", "collection", c.name, "restore_point", id, "error", err)
	}
}

// HookLog returns the collection's hook runs, oldest first.
func (c *Collection) HookLog(ctx context.Context) ([]consistency.Run, error) {
	data, err := c.repo.chain.HookLogs(ctx, c.name)
	if err != nil {
		return nil, err
	}
	var runs []consistency.Run
	dec := json.NewDecoder(bytes.NewReader(data))
	for dec.More() {
		var r consistency.Run
		if err := dec.Decode(&r); err != nil {
			return runs, err
		}
		runs = append(runs, r)
	}
	return runs, nil
}
