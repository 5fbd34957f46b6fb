package snapshot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"sync"

	"github.com/diskpoint/diskpoint/consistency"
)

// hookLog collects a create's hook runs; they are stored as JSON lines in
// the repository, where an operator finds them (diskpoint hooks-log), and
// logged to the repository's logger as they happen.
type hookLog struct {
	logger *slog.Logger
	mu     sync.Mutex
	lines  []byte
}

func (l *hookLog) add(run consistency.Run) {
	line, err := json.Marshal(run)
	if err != nil {
		return
	}
	l.logger.Info("hook run", "hook", run.Hook, "phase", run.Phase, "outcome", run.Outcome, "duration_ms", run.DurationMS, "error", run.Error)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(append(l.lines, line...), '\n')
}

// KeptFailedCreateLogs is how many hook logs of failed creates (creates
// that stored no restore point) a collection keeps: saving one more deletes
// the oldest beyond it. The log of a restore point is kept as long as the
// point and deleted with it (Delete, Prune).
const KeptFailedCreateLogs = 100

// saveHookLog stores the runs of the create that had restore point ID id,
// whether or not it stored the point; after a create that did not, it trims
// the failed creates' logs to KeptFailedCreateLogs. A log that cannot be
// saved or trimmed is logged; it does not fail the create.
func (c *Collection) saveHookLog(ctx context.Context, id string, l *hookLog, stored bool) {
	ctx = context.WithoutCancel(ctx)
	l.mu.Lock()
	defer l.mu.Unlock() // held while saving: a later save has every earlier line
	if len(l.lines) == 0 {
		return
	}
	if err := c.repo.chain.SaveHookLog(ctx, c.name, id, l.lines); err != nil {
		c.repo.chain.Logger().Error("saving hook log", "collection", c.name, "restore_point", id, "error", err)
	}
	if stored {
		return
	}
	if _, err := c.repo.chain.TrimHookLogs(ctx, c.name, KeptFailedCreateLogs); err != nil {
		c.repo.chain.Logger().Error("deleting old hook logs of failed creates", "collection", c.name, "error", err)
	}
}

// HookLog returns the collection's hook runs, oldest first. It reads one
// create's log at a time, so a long history is never all in memory; an error
// is yielded last. The logs kept are those of the collection's restore
// points and of its last KeptFailedCreateLogs failed creates.
func (c *Collection) HookLog(ctx context.Context) iter.Seq2[consistency.Run, error] {
	return func(yield func(consistency.Run, error) bool) {
		errStop := errors.New("stopped by the caller")
		err := c.repo.chain.HookLogs(ctx, c.name, func(id string, data []byte) error {
			dec := json.NewDecoder(bytes.NewReader(data))
			for dec.More() {
				var r consistency.Run
				if err := dec.Decode(&r); err != nil {
					return fmt.Errorf("collection %q: hook log %s: %w", c.name, id, err)
				}
				if !yield(r, nil) {
					return errStop
				}
			}
			return nil
		})
		if err != nil && !errors.Is(err, errStop) {
			yield(consistency.Run{}, err)
		}
	}
}
