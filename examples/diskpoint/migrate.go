package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/diskpoint/diskpoint/snapshot"
)

// migrateStepHook, when set, is called at each step of a migration, as
// its progress is: the kill test sets it (in the test binary only) to
// slow the steps down, so that its kills land in every phase.
var migrateStepHook func(snapshot.MigrateProgress)

// migrateUnits names what each phase of a migration counts.
var migrateUnits = map[string]string{
	"read": "index files", "write": "index files", "delete": "files",
	"packs": "packs", "stage": "objects", "move": "objects",
}

// runMigrate converts a version 1 repository to version 2 in place (see
// snapshot.Repository.Migrate): resumable, and a no-op on a version 2
// repository. An encrypted one is opened with its key (DISKPOINT_KEY and
// the other ways the CLI takes a key), which becomes the first key of the
// version 2 key ring.
func runMigrate(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
	repoDir := fs.String("repo", "", repoFlagUsage)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	lockWait := fs.Duration("lock-wait", 0, "wait this long for running creates, GCs and verifies to finish (default: fail at once)")
	if err := parse(fs, args, map[string]*string{"repo": repoDir}); err != nil {
		return err
	}
	repo, err := openRepository(ctx, e, *repoDir)
	if err != nil {
		return err
	}
	progress := newProgress(e, *asJSON, "migrate")
	opts := snapshot.MigrateOptions{LockWait: *lockWait}
	opts.Progress = func(p snapshot.MigrateProgress) {
		if migrateStepHook != nil {
			migrateStepHook(p)
		}
		progress.stage("migrate: " + p.Phase)
		progress.updateCount(p.Done, p.Total, migrateUnits[p.Phase])
	}
	report, err := repo.Migrate(ctx, opts)
	progress.done()
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e, report)
	}
	if report.V1Packs > 0 || report.V1PacksDeleted > 0 {
		fmt.Fprintf(e.stdout, "encrypted: %d version 1 packs sealed again as version 2 packs (%d written, %d reused from an interrupted run), %d objects sealed again; %d version 1 packs deleted; the version 1 key is the key ring's first key ('diskpoint key add' adds a password)\n",
			report.V1Packs, report.V2PacksWritten, report.V2PacksReused, report.ObjectsResealed, report.V1PacksDeleted)
	}
	switch {
	case report.NothingToDo:
		fmt.Fprintln(e.stdout, "the repository is format version 2 already: nothing to do")
	case report.Converted:
		fmt.Fprintf(e.stdout, "migrated to format version 2: %d blobs in %d version 2 index files (%d written, %d reused from an interrupted run); %d version 1 index files deleted\n",
			report.Blobs, report.V2IndexFilesWritten+report.V2IndexFilesReused, report.V2IndexFilesWritten, report.V2IndexFilesReused, report.V1IndexFilesDeleted)
	default:
		fmt.Fprintf(e.stdout, "finished an interrupted migration to format version 2: %d version 1 index files deleted, %d version 2 index files written for blobs only they listed\n",
			report.V1IndexFilesDeleted, report.V2IndexFilesWritten)
	}
	return nil
}
