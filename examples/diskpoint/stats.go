package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"text/tabwriter"

	"github.com/diskpoint/diskpoint/snapshot"
	"github.com/dustin/go-humanize"
)

// runStats reports sizes as restic stats and borg info do: for the
// repository, per collection and per restore point.
func runStats(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
	repoDir := fs.String("repo", "", repoFlagUsage)
	collection := fs.String("collection", "", "report only this collection `name` (and its points)")
	asJSON := fs.Bool("json", false, "print the figures as JSON")
	if err := parse(fs, args, map[string]*string{"repo": repoDir}); err != nil {
		return err
	}
	repo, err := openRepository(ctx, e, *repoDir)
	if err != nil {
		return err
	}
	progress := newProgress(e, *asJSON, "stats")
	opts := snapshot.StatsOptions{Collection: *collection}
	if progress != nil {
		opts.Progress = func(done, total int) { progress.updateCount(int64(done), int64(total), "restore points") }
	}
	st, err := repo.Stats(ctx, opts)
	progress.done()
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e, st)
	}
	printRepositoryStats(e, *repoDir, *collection == "", st)
	return nil
}

// printRepositoryStats prints st as text; all says whether st.Collections
// is every collection.
func printRepositoryStats(e *env, repoDir string, all bool, st snapshot.RepositoryStats) {
	w := e.stdout
	fmt.Fprintf(w, "repository %s: %s", repoDir, count(st.RestorePoints, "restore point"))
	if all {
		fmt.Fprintf(w, " in %s", count(len(st.Collections), "collection"))
	}
	if st.DamagedPoints > 0 {
		fmt.Fprintf(w, " (and %d damaged, not counted: run verify)", st.DamagedPoints)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  logical size:  %s (the disks' sizes, summed over restore points)\n", size(st.LogicalBytes))
	fmt.Fprintf(w, "  stored size:   %s (what the restore points need, compressed)\n", size(st.StoredBytes))
	fmt.Fprintf(w, "  dedup ratio:   %s\n", ratio(st.DedupRatio))
	fmt.Fprintf(w, "  chunks:        %d, in %s\n", st.Chunks, count(st.Packs, "pack"))
	fmt.Fprintf(w, "  packs on disk: %d files, %s (gc reclaims what no restore point needs)\n", st.PackFiles, size(st.PackBytes))
	if st.MissingBlobs > 0 {
		fmt.Fprintf(w, "  missing:       %d blobs the index lacks (run verify)\n", st.MissingBlobs)
	}
	if len(st.Collections) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "COLLECTION\tPOINTS\tLOGICAL\tSTORED\tFREED IF DELETED\tRATIO\tCHUNKS\tPACKS")
	for _, c := range st.Collections {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%d\t%d\n", c.Name, c.RestorePoints, size(c.LogicalBytes), size(c.StoredBytes),
			size(c.FreedIfDeleted), ratio(c.DedupRatio), c.Chunks, c.Packs)
	}
	tw.Flush()
	for _, c := range st.Collections {
		fmt.Fprintf(w, "\ncollection %s:\n", c.Name)
		tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tCREATED\tLOGICAL\tSTORED\tADDED AT CREATE\tFREED IF DELETED\tRATIO\tCHUNKS\tPACKS")
		for _, p := range c.Points {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", p.ID, showTime(p.Created), size(p.LogicalBytes), size(p.StoredBytes),
				size(p.AddedBytes), size(p.FreedIfDeleted), ratio(p.DedupRatio), p.Chunks, p.Packs)
		}
		tw.Flush()
	}
}

func size(n int64) string { return humanize.IBytes(uint64(max(n, 0))) }

func ratio(r float64) string {
	if r == 0 {
		return "-" // nothing stored (the disks are all zeros): no ratio
	}
	return strconv.FormatFloat(r, 'f', 2, 64) + "x"
}

// count is n things, in the singular for one.
func count[N ~int | ~int64](n N, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}
