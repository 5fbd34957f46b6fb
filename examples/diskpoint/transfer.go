package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/diskpoint/diskpoint/snapshot"
	"github.com/dustin/go-humanize"
)

// runTransfer copies the restore points the vault lacks from the local
// tier (-repo) to the vault (-to-repo) and, with -keep-local, prunes the
// local tier to what the vault holds: snapshot.Transfer.
func runTransfer(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
	repoDir := fs.String("repo", "", "the local tier: "+repoFlagUsage)
	toRepo := fs.String("to-repo", "", "the vault: repository `location`, as -repo")
	collection := fs.String("collection", "", "transfer only this collection `name` (default: every collection)")
	keepLocal := fs.Int("keep-local", 0, "then keep only the newest `N` restore points of each collection in the local tier, deleting older ones the vault holds (default: delete nothing)")
	gc := fs.Bool("gc", false, "with -keep-local: run gc on the local tier when points were deleted (default: say that one is due)")
	lockWait := fs.Duration("lock-wait", 0, "wait this long for a collection's lock, and with -gc for running creates (default: fail at once)")
	checkpoint := fs.String("checkpoint", "64MiB", "make what was moved durable in the vault every `SIZE`, so an interrupted transfer resumes there")
	asJSON := fs.Bool("json", false, "print what was transferred and pruned as JSON")
	if err := parse(fs, args, map[string]*string{"repo": repoDir, "to-repo": toRepo}); err != nil {
		return err
	}
	opts := snapshot.TransferOptions{Collection: *collection, LockWait: *lockWait}
	fs.Visit(func(f *flag.Flag) { opts.PruneLocal = opts.PruneLocal || f.Name == "keep-local" })
	if opts.PruneLocal {
		if *keepLocal < 0 {
			return usageError{fmt.Sprintf("-keep-local %d: give a count of restore points, 0 or more", *keepLocal)}
		}
		opts.KeepLocal = *keepLocal
	} else if *gc {
		return usageError{"-gc needs -keep-local: only a prune leaves anything to collect"}
	}
	every, err := parseSize(*checkpoint)
	if err != nil {
		return usageError{"-checkpoint: " + err.Error()}
	}
	opts.FlushEvery = int64(every)
	local, err := openRepository(ctx, e, *repoDir)
	if err != nil {
		return fmt.Errorf("local tier: %w", err)
	}
	defer local.Close()
	if *collection != "" {
		c, err := local.Collection(*collection)
		if err != nil {
			return err
		}
		if err := mustBeUsed(ctx, c, *repoDir); err != nil {
			return err
		}
	}
	vault, err := openRepository(ctx, e, *toRepo)
	if err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	defer vault.Close()
	progress := newProgress(e, *asJSON, "transfer")
	if progress != nil {
		opts.Progress = func(p snapshot.TransferProgress) {
			progress.stage(fmt.Sprintf("transfer %s/%s (%d of %d)", p.Collection, p.Point, p.Index, p.Points))
			progress.update(p.Copy.Covered, p.DiskBytes)
		}
	}
	if *gc {
		opts.GC = &snapshot.GCOptions{LockWait: *lockWait}
		if progress != nil {
			opts.GC.Progress = func(p snapshot.GCProgress) {
				progress.stage("gc " + p.Phase)
				progress.updateCount(p.Done, p.Total, "")
			}
		}
	}
	result, err := snapshot.Transfer(ctx, local, vault, opts)
	progress.done()
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e, result)
	}
	for _, p := range result.Transferred {
		fmt.Fprintf(e.stdout, "transferred %s/%s: moved %s (%s, %s stored); %s there already\n", p.Collection, p.ID,
			count(p.Blobs, "blob"), humanize.IBytes(uint64(p.Bytes)), humanize.IBytes(uint64(p.Stored)), count(p.BlobsPresent, "blob"))
	}
	for _, p := range result.Pruned {
		fmt.Fprintf(e.stdout, "pruned %s/%s from the local tier (created %s; the vault holds it)\n", p.Collection, p.ID, showTime(p.Created))
	}
	for _, p := range result.KeptNotInVault {
		fmt.Fprintf(e.stdout, "kept %s/%s in the local tier: the vault does not hold it\n", p.Collection, p.ID)
	}
	fmt.Fprintf(e.stdout, "%s transferred, %s in the vault already", count(len(result.Transferred), "restore point"), count(result.AlreadyInVault, "restore point"))
	if opts.PruneLocal {
		fmt.Fprintf(e.stdout, "; %s pruned from the local tier", count(len(result.Pruned), "restore point"))
	}
	switch {
	case result.GC != nil:
		fmt.Fprintf(e.stdout, "; gc reclaimed %s", humanize.IBytes(uint64(max(result.GC.BytesReclaimed(), 0))))
	case result.GCDue:
		fmt.Fprintf(e.stdout, " (run gc on the local tier, or transfer with -gc, to reclaim their space)")
	}
	fmt.Fprintln(e.stdout)
	return nil
}
