package snapshot

import (
	"context"
	"time"

	"github.com/diskpoint/diskpoint/chain"
)

// MigrateOptions configure Migrate. The zero value fails at once with
// ErrLocked if another operation holds the repository.
type MigrateOptions struct {
	// LockWait: while a create, GC or verify runs, in this process or
	// another, wait up to this long for it to finish.
	LockWait time.Duration
	// Progress, if set, is called as the migration goes.
	Progress func(MigrateProgress)
}

// MigrateProgress reports a migration's advance: Done of Total in Phase,
// which is "read" (version 1 index files), "write" (version 2 index files)
// or "delete" (version 1 index files); an encrypted repository's migration
// also goes through "packs" (version 1 packs converted), "stage" (objects
// sealed again) and "move" (those put in place after the switch), and its
// "delete" counts version 1 packs too.
type MigrateProgress struct {
	Phase       string
	Done, Total int64
}

// Migrate converts a version 1 repository to format version 2 in place:
// its index is rewritten as version 2 index files, then its config says
// version 2; packs, restore points and everything else stay as they are.
// It is crash-safe and resumable: stopped at any moment, the repository
// is version 1 or version 2, whole, and running Migrate again finishes
// the job. On a version 2 repository it does nothing, and its report says
// so (NothingToDo). An encrypted repository, opened with its version 1
// key, becomes an encrypted version 2 repository whose key ring holds that
// key (add a password afterwards with AddKey): every pack and sealed object
// is sealed again, and restore points, blob IDs and deduplication stay as
// they were. See chain.Repository.Migrate.
func (r *Repository) Migrate(ctx context.Context, opts MigrateOptions) (chain.MigrateReport, error) {
	c := chain.MigrateOptions{LockWait: opts.LockWait}
	if progress := opts.Progress; progress != nil {
		c.Progress = func(p chain.MigrateProgress) {
			progress(MigrateProgress{Phase: p.Phase, Done: p.Done, Total: p.Total})
		}
	}
	return r.chain.Migrate(ctx, c)
}
