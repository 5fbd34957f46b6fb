package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/nbd"
	"github.com/diskpoint/diskpoint/snapshot"
	"github.com/dustin/go-humanize"
)

func runDiff(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
	repoDir := fs.String("repo", "", repoFlagUsage)
	collection := fs.String("collection", "", "collection `name`")
	from := fs.String("from", "", "the older restore point: `ID`, a unique prefix of one, or latest (the newest that has the disk)")
	to := fs.String("to", "", "the newer restore point: `ID`, a unique prefix of one, or latest (the newest that has the disk)")
	disk := fs.String("disk", "", "disk `name`")
	asJSON := fs.Bool("json", false, "print the ranges as JSON")
	if err := parse(fs, args, map[string]*string{"repo": repoDir, "collection": collection, "from": from, "to": to, "disk": disk}); err != nil {
		return err
	}
	_, c, err := openCollection(ctx, e, *repoDir, *collection)
	if err != nil {
		return err
	}
	ranges, err := c.Diff(ctx, snapshot.DiffOptions{Disk: *disk, From: *from, To: *to})
	if err != nil {
		return err
	}
	if *asJSON {
		type jsonRange struct {
			Offset int64 `json:"offset"`
			Length int64 `json:"length"`
		}
		out := make([]jsonRange, len(ranges))
		for i, r := range ranges {
			out[i] = jsonRange{r.Offset, r.Length}
		}
		return printJSON(e, out)
	}
	var total int64
	for _, r := range ranges {
		fmt.Fprintf(e.stdout, "%d %d\n", r.Offset, r.Length) // a RANGES_FILE, as create -changed reads
		total += r.Length
	}
	fmt.Fprintf(e.stderr, "%d ranges, %s differ\n", len(ranges), humanize.IBytes(uint64(total)))
	return nil
}

func runCopy(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
	repoDir := fs.String("repo", "", "source repository `location`: "+locationForms)
	collection := fs.String("collection", "", "source collection `name`")
	point := fs.String("point", "", "restore point: `ID`, a unique prefix of one, or latest")
	all := fs.Bool("all", false, "copy every restore point of the collection that the target lacks")
	toRepo := fs.String("to-repo", "", "target repository `location`, as -repo (may be the source)")
	toCollection := fs.String("to-collection", "", "target collection `name`")
	fromKeyFile := fs.String("from-key-file", "", "the source repository's key is in `FILE` (default: "+fromKeyVariables[1]+", else the target's key)")
	fromKeyCommand := fs.String("from-key-command", "", "the source repository's key is what shell `COMMAND` prints (default: "+fromKeyVariables[2]+")")
	fromNoKey := fs.Bool("from-no-key", false, "the source repository is not encrypted (when the target's key is set)")
	rateLimit := fs.String("rate-limit", "", "limit copies into the target collection: `azure|N/DURATION`")
	checkpoint := fs.String("checkpoint", "64MiB", "make what was moved durable every `SIZE`, so an interrupted copy resumes there")
	asJSON := fs.Bool("json", false, "print the copy's figures as JSON (with -all, an array)")
	if err := parse(fs, args, map[string]*string{"repo": repoDir, "collection": collection, "to-repo": toRepo, "to-collection": toCollection}); err != nil {
		return err
	}
	if (*point == "") == !*all {
		return usageError{"give -point ID or -all"}
	}
	sourceKey := credentialSource{key: keySource{file: *fromKeyFile, command: *fromKeyCommand, names: [3]string{"", "-from-key-file", "-from-key-command"}}}
	if !sourceKey.given() {
		sourceKey = environmentCredential(fromKeyVariables, fromPasswordVariables)
	}
	switch {
	case *fromNoKey && sourceKey.given():
		return usageError{"-from-no-key, yet a source key is given"}
	case *fromNoKey:
		sourceKey = credentialSource{}
	case !sourceKey.given():
		sourceKey = environmentCredential(keyVariables, passwordVariables) // both repositories have one credential
	}
	every, err := parseSize(*checkpoint)
	if err != nil {
		return usageError{"-checkpoint: " + err.Error()}
	}
	opts := snapshot.CopyOptions{FlushEvery: int64(every)}
	if *rateLimit != "" {
		limit, err := parseRateLimit(*rateLimit)
		if err != nil {
			return usageError{"-rate-limit: " + err.Error()}
		}
		opts.RateLimit = &limit
	}
	srcRepo, err := openRepositoryWithKey(ctx, e, *repoDir, sourceKey)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	defer srcRepo.Close()
	src, err := srcRepo.Collection(*collection)
	if err != nil {
		return err
	}
	_, dst, err := openCollection(ctx, e, *toRepo, *toCollection)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	var points []*snapshot.RestorePoint
	if *all {
		if points, err = missingPoints(ctx, src, dst, *repoDir); err != nil {
			return err
		}
	} else {
		rp, err := src.Get(ctx, *point)
		if err != nil {
			return err
		}
		points = []*snapshot.RestorePoint{rp}
	}
	type result struct {
		ID             string `json:"id"`
		Collection     string `json:"collection"`
		AlreadyPresent bool   `json:"already_present"`
		chain.CopyStats
	}
	results := []result{}
	for _, rp := range points {
		progress := newProgress(e, *asJSON, "copy "+rp.ID)
		opts.Progress = nil
		if progress != nil {
			var total int64
			for _, d := range rp.Disks {
				total += d.Size
			}
			opts.Progress = func(s chain.CopyStats) { progress.update(s.Covered, total) }
		}
		_, err := dst.Get(ctx, rp.ID)
		present := err == nil // then Copy succeeds and moves nothing
		copied, stats, err := src.Copy(ctx, rp.ID, dst, opts)
		progress.done()
		if err != nil {
			return err
		}
		r := result{ID: copied.ID, Collection: copied.Collection, AlreadyPresent: present, CopyStats: stats}
		results = append(results, r)
		if *asJSON {
			continue
		}
		if r.AlreadyPresent {
			fmt.Fprintf(e.stdout, "restore point %s is in %s in %s already: nothing to copy\n", copied.ID, *toCollection, *toRepo)
			continue
		}
		fmt.Fprintf(e.stdout, "copied restore point %s to %s in %s: moved %s (%s, %s stored); %s there already\n",
			copied.ID, *toCollection, *toRepo, count(stats.Blobs, "blob"), humanize.IBytes(uint64(stats.Bytes)), humanize.IBytes(uint64(stats.Stored)), count(stats.BlobsPresent, "blob"))
	}
	switch {
	case *asJSON && *all:
		return printJSON(e, results)
	case *asJSON:
		return printJSON(e, results[0])
	case *all && len(points) == 0:
		fmt.Fprintf(e.stdout, "%s in %s has every restore point of %s: nothing to copy\n", *toCollection, *toRepo, *collection)
	}
	return nil
}

// missingPoints returns the restore points of src that dst lacks, oldest
// first, as copy -all copies them.
func missingPoints(ctx context.Context, src, dst *snapshot.Collection, srcRepo string) ([]*snapshot.RestorePoint, error) {
	points, err := src.List(ctx)
	if err != nil {
		return nil, err
	}
	if len(points) == 0 {
		if err := mustBeUsed(ctx, src, srcRepo); err != nil {
			return nil, err
		}
	}
	have, err := dst.List(ctx)
	if err != nil {
		return nil, err
	}
	present := map[string]bool{}
	for _, rp := range have {
		present[rp.ID] = true
	}
	var missing []*snapshot.RestorePoint
	for _, rp := range points {
		if !present[rp.ID] {
			missing = append(missing, rp)
		}
	}
	return missing, nil
}

func runPrune(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
	repoDir := fs.String("repo", "", repoFlagUsage)
	collection := fs.String("collection", "", "collection `name`")
	var p snapshot.RetentionPolicy
	fs.IntVar(&p.Last, "keep-last", 0, "keep the newest `N` restore points")
	fs.IntVar(&p.Hourly, "keep-hourly", 0, "keep the newest point of each of the last `N` hours")
	fs.IntVar(&p.Daily, "keep-daily", 0, "keep one point per day for the last `N` days with points")
	fs.IntVar(&p.Weekly, "keep-weekly", 0, "keep one point per ISO week for the last `N` weeks")
	fs.IntVar(&p.Monthly, "keep-monthly", 0, "keep one point per month for the last `N` months")
	fs.IntVar(&p.Yearly, "keep-yearly", 0, "keep one point per year for the last `N` years")
	within := fs.String("keep-within", "", "keep every point created less than `DURATION` (like 7d, 2w, 1y, 36h) before the newest")
	utc := fs.Bool("utc", false, "hours, days, weeks, months and years are UTC's (default: local time)")
	dryRun := fs.Bool("dry-run", false, "say what would be deleted, delete nothing")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := parse(fs, args, map[string]*string{"repo": repoDir, "collection": collection}); err != nil {
		return err
	}
	if *within != "" {
		d, err := parseKeepWithin(*within)
		if err != nil {
			return usageError{"-keep-within: " + err.Error()}
		}
		p.Within = d
	}
	if p.IsEmpty() {
		return usageError{"give at least one -keep-* rule"}
	}
	if *utc {
		p.Location = time.UTC
	}
	_, c, err := openCollection(ctx, e, *repoDir, *collection)
	if err != nil {
		return err
	}
	result, err := c.Prune(ctx, snapshot.PruneOptions{Policy: p, DryRun: *dryRun})
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e, result)
	}
	tw := tabwriter.NewWriter(e.stdout, 2, 8, 2, ' ', 0)
	verb := "deleted"
	if *dryRun {
		verb = "would delete"
	}
	for _, k := range result.Kept {
		fmt.Fprintf(tw, "keep\t%s\t%s\t%s\n", k.ID, showTime(k.Created), strings.Join(k.Reasons, ","))
	}
	for _, d := range result.Deleted {
		fmt.Fprintf(tw, "%s\t%s\t%s\t\n", verb, d.ID, showTime(d.Created))
	}
	tw.Flush()
	fmt.Fprintf(e.stdout, "kept %d, %s %d restore points", len(result.Kept), verb, len(result.Deleted))
	if !*dryRun && len(result.Deleted) > 0 {
		fmt.Fprint(e.stdout, " (run gc to reclaim their space)")
	}
	fmt.Fprintln(e.stdout)
	return nil
}

func runServeNBD(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
	repoDir := fs.String("repo", "", repoFlagUsage)
	collection := fs.String("collection", "", "collection `name`")
	point := fs.String("point", "", "restore point: `ID`, a unique prefix of one, or latest (the newest that has the disk, or the newest without -disk)")
	disk := fs.String("disk", "", "disk `name` to export; without it, every disk of the point, each an export of its name")
	listen := fs.String("listen", "", "`address`: HOST:PORT, or unix:PATH for a Unix socket")
	if err := parse(fs, args, map[string]*string{"repo": repoDir, "collection": collection, "point": point, "listen": listen}); err != nil {
		return err
	}
	_, c, err := openCollection(ctx, e, *repoDir, *collection)
	if err != nil {
		return err
	}
	l, urlOf, err := listenNBD(*listen)
	if err != nil {
		return err
	}
	return serveDisks(ctx, e, c, *point, *disk, l, urlOf)
}

// listenNBD listens on addr and returns how an NBD client names an export there.
func listenNBD(addr string) (net.Listener, func(disk string) string, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		l, err := net.Listen("unix", path)
		if err != nil {
			return nil, nil, err
		}
		return l, func(disk string) string { return fmt.Sprintf("nbd+unix:///%s?socket=%s", disk, path) }, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	return l, func(disk string) string { return fmt.Sprintf("nbd://%s/%s", l.Addr(), disk) }, nil
}

// serveDisks exports disk of a restore point, or every disk of it if disk
// is "", read-only until ctx is done.
func serveDisks(ctx context.Context, e *env, c *snapshot.Collection, point, disk string, l net.Listener, urlOf func(string) string) error {
	defer l.Close()
	rp, err := c.GetWithDisk(ctx, point, disk)
	if err != nil {
		return err
	}
	disks := []string{disk}
	if disk == "" {
		disks = nil
		for _, d := range rp.Disks {
			disks = append(disks, d.Name)
		}
		if len(disks) == 0 {
			return fmt.Errorf("restore point %s/%s has no disks to export", c.Name(), rp.ID)
		}
	}
	srv := &nbd.Server{Exports: map[string]*nbd.Export{}, Log: e.logger()}
	for _, d := range disks {
		r, err := c.OpenDisk(ctx, rp.ID, d, snapshot.ReaderOptions{})
		if err != nil {
			return err
		}
		defer r.Close() // releases its reader lock
		srv.Exports[d] = &nbd.Export{Name: d, Description: c.Name() + "/" + rp.ID + "/" + d, Size: r.Size(), Disk: r}
	}
	for _, d := range disks {
		fmt.Fprintf(e.stdout, "serving disk %s of restore point %s (%s), read-only, at %s\n", d, rp.ID, humanize.IBytes(uint64(srv.Exports[d].Size)), urlOf(d))
	}
	return srv.Serve(ctx, l)
}
