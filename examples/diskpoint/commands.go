package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/diskpoint/diskpoint/blockdiff"
	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/consistency"
	"github.com/diskpoint/diskpoint/snapshot"
	"github.com/dustin/go-humanize"
)

func runInit(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
	repoDir := fs.String("repo", "", "repository `location` to create: "+locationForms+" (the bucket or container must exist)")
	blockSize := fs.String("block-size", "", "block `size`, a power of two from 16KiB to 16MiB (default 64KiB)")
	format := fs.Int("format", chain.FormatVersion, "repository format `version`: 1, or 2 (an index read a bucket at a time, for repositories of millions of chunks)")
	encrypt := fs.Bool("encrypt", false, "encrypt the repository with the key DISKPOINT_KEY, DISKPOINT_KEY_FILE or DISKPOINT_KEY_COMMAND gives (diskpoint keygen makes one), or with -format 2 the password DISKPOINT_PASSWORD, DISKPOINT_PASSWORD_FILE or DISKPOINT_PASSWORD_COMMAND gives")
	if err := parse(fs, args, map[string]*string{"repo": repoDir}); err != nil {
		return err
	}
	if *format != chain.FormatVersion && *format != chain.FormatVersion2 {
		return usageError{fmt.Sprintf("-format: %d is not a format version (1 or 2)", *format)}
	}
	var key []byte
	var password string
	if *encrypt {
		var err error
		if key, password, err = initCredential(ctx, *format); err != nil {
			return err
		}
	}
	bs := 0
	if *blockSize != "" {
		var err error
		if bs, err = parseSize(*blockSize); err != nil {
			return usageError{"-block-size: " + err.Error()}
		}
	}
	repo, err := initLocation(ctx, *repoDir, snapshot.InitOptions{BlockSize: bs, Key: key, Password: password, Format: *format})
	if err != nil {
		return err
	}
	what := "not encrypted"
	switch {
	case repo.UsedKey() != "":
		what = fmt.Sprintf("encrypted with XChaCha20-Poly1305, key ring of key %s: keep the credential safe, nothing restores without one; diskpoint key add adds more", repo.UsedKey())
	case key != nil:
		what = "encrypted with AES-256-GCM: keep the key safe, nothing restores without it"
	}
	fmt.Fprintf(e.stdout, "initialized repository %s (format %d, block size %s, %s)\n", *repoDir, repo.Config().Version, humanize.IBytes(uint64(repo.Config().BlockSize)), what)
	return nil
}

// parseSize reads a byte count with go-humanize: 65536, 64K, 64k, 64KB,
// 64kb, 64KiB, "64 KiB", 1.5M. Units are binary whichever way they are
// spelled (1K = 1KB = 1KiB = 1024 bytes), as disk tools such as qemu-img and
// dd's K read them: block sizes and checkpoints are powers of two.
func parseSize(s string) (int, error) {
	n, err := humanize.ParseBytes(binaryUnits(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a size (like 65536, 64K, 64KiB): %w", s, err)
	}
	if n == 0 || n > math.MaxInt64 {
		return 0, fmt.Errorf("size %q is out of range", s)
	}
	return int(n), nil
}

// binaryUnits rewrites a decimal unit suffix (K, KB, M, MB, ...) as its
// binary one (KiB, MiB, ...), for humanize.ParseBytes.
func binaryUnits(s string) string {
	t := strings.TrimSpace(s)
	lower := strings.ToLower(t)
	for _, unit := range []string{"kb", "mb", "gb", "tb", "pb", "k", "m", "g", "t", "p"} {
		if num, ok := strings.CutSuffix(lower, unit); ok && num != "" && !strings.HasSuffix(num, "i") {
			return t[:len(num)] + unit[:1] + "iB"
		}
	}
	return t
}

func openCollection(ctx context.Context, e *env, repoDir, name string) (*snapshot.Repository, *snapshot.Collection, error) {
	repo, err := openRepository(ctx, e, repoDir)
	if err != nil {
		return nil, nil, err
	}
	c, err := repo.Collection(name)
	return repo, c, err
}

func runCreate(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
	repoDir := fs.String("repo", "", repoFlagUsage)
	collection := fs.String("collection", "", "collection `name` (one per VM)")
	configFile := fs.String("config", "", "VM configuration `file` to store with the restore point")
	asJSON := fs.Bool("json", false, "print the restore point as JSON")
	var exclude, changed, bitmaps listFlag
	fs.Var(&exclude, "exclude", "leave out `DISK` (repeatable)")
	fs.Var(&changed, "changed", "`DISK=RANGES_FILE`: only these byte ranges changed since DISK's last restore point (repeatable)")
	fs.Var(&bitmaps, "bitmap", "`DISK=NAME`: read only the extents QEMU dirty bitmap NAME marks, for DISK given as an NBD URI, when DISK's last restore point was taken with the same bitmap; otherwise read and compare every block, and say why (repeatable)")
	qmpSocket := fs.String("qmp", "", "QMP `socket` of a running QEMU or qemu-storage-daemon: take a pull-mode backup of the one disk, given as DISK=NODE (its qcow2 node name)")
	qmpNBD := fs.String("qmp-nbd", "", "with -qmp: the Unix `socket` of the daemon's NBD server, on which the frozen view is exported")
	hooks := addHookFlags(fs)
	if err := parse(fs, args, map[string]*string{"repo": repoDir, "collection": collection}); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageError{"no disks given (DISK=PATH or DISK=NBD_URI...)"}
	}
	opts := snapshot.CreateOptions{Exclude: exclude}
	if err := hooks.apply(&opts); err != nil {
		return err
	}
	if *configFile != "" {
		data, err := os.ReadFile(*configFile)
		if err != nil {
			return fmt.Errorf("VM config: %w", err)
		}
		opts.VMConfig = data
	}
	if *qmpSocket != "" || *qmpNBD != "" {
		return createPullMode(ctx, e, *repoDir, *collection, *qmpSocket, *qmpNBD, *asJSON, opts, fs.Args(), len(changed)+len(bitmaps)+len(exclude))
	}
	index := map[string]int{}
	for _, arg := range fs.Args() {
		name, path, ok := strings.Cut(arg, "=")
		if !ok || name == "" || path == "" {
			return usageError{fmt.Sprintf("disk %q: want DISK=PATH", arg)}
		}
		index[name] = len(opts.Disks)
		if isNBDURI(path) {
			opts.Disks = append(opts.Disks, snapshot.DiskSource{Name: name, NBD: path})
			continue
		}
		opts.Disks = append(opts.Disks, snapshot.DiskSource{Name: name, Path: path})
	}
	for _, arg := range changed {
		name, file, ok := strings.Cut(arg, "=")
		i, known := index[name]
		if !ok || !known || opts.Disks[i].NBD != "" {
			return usageError{fmt.Sprintf("-changed %q: want DISK=RANGES_FILE for a disk given as DISK=PATH", arg)}
		}
		ranges, err := readRanges(ctx, file, opts.Disks[i].Path)
		if err != nil {
			return err
		}
		opts.Disks[i].ChangedOnly, opts.Disks[i].Changed = true, ranges
	}
	for _, arg := range bitmaps {
		name, bitmap, ok := strings.Cut(arg, "=")
		i, known := index[name]
		if !ok || !known || bitmap == "" || opts.Disks[i].NBD == "" {
			return usageError{fmt.Sprintf("-bitmap %q: want DISK=NAME for a disk given as DISK=NBD_URI", arg)}
		}
		opts.Disks[i].Bitmap = bitmap
	}
	_, c, err := openCollection(ctx, e, *repoDir, *collection)
	if err != nil {
		return err
	}
	progress := newProgress(e, *asJSON, "create "+*collection)
	createProgress(ctx, progress, &opts)
	start := time.Now()
	rp, err := c.Create(ctx, opts)
	progress.done()
	if err != nil {
		return err
	}
	warnCreated(e, rp)
	if *asJSON {
		return printJSON(e, rp)
	}
	return printCreated(e, rp, start)
}

// printCreated says what a create stored.
func printCreated(e *env, rp *snapshot.RestorePoint, start time.Time) error {
	fmt.Fprintf(e.stdout, "created restore point %s in %s in %s: %s", rp.ID, rp.Collection, time.Since(start).Round(time.Millisecond), consistencyLabel(rp))
	if rp.FreezeMillis > 0 && rp.Consistency != consistency.Inconsistent {
		fmt.Fprintf(e.stdout, ", held still for %d ms", rp.FreezeMillis)
	}
	fmt.Fprintln(e.stdout)
	if rp.FallbackReason != "" {
		fmt.Fprintf(e.stdout, "  asked for %s: %s\n", rp.RequestedConsistency, rp.FallbackReason)
	}
	printDisks(e, rp)
	return nil
}

// isNBDURI says whether a disk's source is an NBD URI (nbd://...,
// nbd+unix://..., and the TLS ones, which the NBD client refuses with a
// reason) rather than a path.
func isNBDURI(source string) bool {
	scheme, _, ok := strings.Cut(source, "://")
	return ok && (scheme == "nbd" || strings.HasPrefix(scheme, "nbd+") || strings.HasPrefix(scheme, "nbds"))
}

// readRanges reads the changed-range list in path for the disk at
// diskPath: a range past the disk's end is an error naming its line.
func readRanges(ctx context.Context, path, diskPath string) ([]blockdiff.Range, error) {
	disk, err := blockdiff.OpenDisk(ctx, diskPath)
	if err != nil {
		return nil, err
	}
	size := disk.Size
	disk.Close()
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ranges, err := blockdiff.ParseRangesWithin(f, size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ranges, nil
}

func printDisks(e *env, rp *snapshot.RestorePoint) {
	tw := tabwriter.NewWriter(e.stdout, 2, 8, 2, ' ', 0)
	// STORED is what the disk added to the repository at create, as in list.
	fmt.Fprintln(tw, "  DISK\tSIZE\tCHANGED\tSTORED AT CREATE\tPARENT")
	for _, d := range rp.Disks {
		parent := d.Parent
		if parent == "" {
			parent = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", d.Name, humanize.IBytes(uint64(d.Size)),
			humanize.IBytes(uint64(d.ChangedBytes)), humanize.IBytes(uint64(d.StoredBytes)), parent)
	}
	tw.Flush()
	for _, d := range rp.Disks {
		if d.ChangeReason != "" {
			fmt.Fprintf(e.stdout, "  %s: %s\n", d.Name, d.ChangeReason)
		}
	}
	if len(rp.Excluded) > 0 {
		fmt.Fprintf(e.stdout, "  excluded: %s\n", strings.Join(rp.Excluded, ", "))
	}
}

func printJSON(e *env, v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func runList(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
	repoDir := fs.String("repo", "", repoFlagUsage)
	collection := fs.String("collection", "", "collection `name`")
	asJSON := fs.Bool("json", false, "print a JSON array")
	if err := parse(fs, args, map[string]*string{"repo": repoDir, "collection": collection}); err != nil {
		return err
	}
	_, c, err := openCollection(ctx, e, *repoDir, *collection)
	if err != nil {
		return err
	}
	points, err := c.ListWithDamaged(ctx)
	if err != nil {
		return err
	}
	if len(points) == 0 {
		if err := mustBeUsed(ctx, c, *repoDir); err != nil {
			return err
		}
	}
	if *asJSON {
		return printJSON(e, points) // [] when empty, never null
	}
	tw := tabwriter.NewWriter(e.stdout, 2, 8, 2, ' ', 0)
	// STORED is what the point added to the repository when it was created;
	// what it needs, or would free, is diskpoint stats'.
	fmt.Fprintln(tw, "ID\tCREATED\tCONSISTENCY\tDISKS\tSIZE\tSTORED AT CREATE")
	var damaged []snapshot.ListedPoint
	for _, p := range points {
		if p.Damaged {
			fmt.Fprintf(tw, "%s\t%s\tDAMAGED\t-\t-\t-\n", p.ID, showTime(p.Stored))
			damaged = append(damaged, p)
			continue
		}
		var size, stored int64
		for _, d := range p.Disks {
			size += d.Size
			stored += d.StoredBytes
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", p.ID, showTime(p.Created), p.Consistency,
			len(p.Disks), humanize.IBytes(uint64(size)), humanize.IBytes(uint64(stored)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range damaged {
		fmt.Fprintf(e.stdout, "damaged %s/%s (time shown: when it was stored): %s\n", p.Collection, p.ID, p.DamageReason)
	}
	return nil
}

func runShow(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
	repoDir := fs.String("repo", "", repoFlagUsage)
	collection := fs.String("collection", "", "collection `name`")
	point := fs.String("point", "", "restore point: `ID`, a unique prefix of one, or latest")
	disk := fs.String("disk", "", "with -point latest: the newest restore point that has `DISK`")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args, map[string]*string{"repo": repoDir, "collection": collection, "point": point}); err != nil {
		return err
	}
	_, c, err := openCollection(ctx, e, *repoDir, *collection)
	if err != nil {
		return err
	}
	rp, err := c.GetWithDisk(ctx, *point, *disk)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e, rp)
	}
	fmt.Fprintf(e.stdout, "restore point %s in %s\n  created:     %s\n  consistency: %s (asked for %s)\n", rp.ID, rp.Collection, rp.Created.Local().Format(time.RFC3339), rp.Consistency, rp.RequestedConsistency)
	if rp.FallbackReason != "" {
		fmt.Fprintf(e.stdout, "  why:         %s\n", rp.FallbackReason)
	}
	fmt.Fprintf(e.stdout, "  capture:     %s\n", captureSummary(rp))
	for _, w := range rp.Warnings {
		fmt.Fprintf(e.stdout, "  warning:     %s\n", w)
	}
	if rp.ConfigSize > 0 {
		fmt.Fprintf(e.stdout, "  VM config:   %s\n", humanize.IBytes(uint64(rp.ConfigSize)))
	}
	printDisks(e, rp)
	return nil
}

func runRestore(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
	repoDir := fs.String("repo", "", repoFlagUsage)
	collection := fs.String("collection", "", "collection `name`")
	point := fs.String("point", "", "restore point: `ID`, a unique prefix of one, or latest (the newest that has the disk)")
	disk := fs.String("disk", "", "`name` of the disk to restore")
	to := fs.String("to", "", "target `path`: a file (written beside it, renamed into place when complete), a block device, a link to either, or a directory (DIR/DISK.img)")
	force := fs.Bool("force", false, "replace an existing file, or write over an existing device")
	incremental := fs.Bool("incremental", false, "update the existing target in place, writing only the blocks that differ")
	from := fs.String("from", "", "with -incremental: the restore point `ID` the target holds now (then the target is not read)")
	sync := fs.Bool("sync", false, "make the restored disk durable (fsync) before returning")
	vault := fs.String("vault", "", "the vault `location` (as -repo) that transfer copies -repo's points to: a point -repo lacks is restored from it (opened only then)")
	if err := parse(fs, args, map[string]*string{"repo": repoDir, "collection": collection, "point": point, "disk": disk, "to": to}); err != nil {
		return err
	}
	if *from != "" && !*incremental {
		return usageError{"-from needs -incremental"}
	}
	if *force && *incremental {
		return usageError{"-force and -incremental: -incremental updates the target in place, -force replaces it; give one"}
	}
	repo, c, err := openCollection(ctx, e, *repoDir, *collection)
	if err != nil {
		return err
	}
	progress := newProgress(e, false, "restore "+*disk)
	opts := snapshot.RestoreOptions{Point: *point, Disk: *disk, Path: *to, Incremental: *incremental, From: *from, Sync: *sync, Overwrite: *force}
	if progress != nil {
		opts.Progress = progress.update
	}
	start := time.Now()
	var stats snapshot.RestoreStats
	tier := snapshot.TierLocal
	if *vault != "" {
		tiers := &snapshot.Tiers{Local: repo, OpenVault: func(ctx context.Context) (*snapshot.Repository, error) { return openRepository(ctx, e, *vault) }}
		stats, tier, err = tiers.RestoreDisk(ctx, *collection, opts)
		if tiers.Vault != nil { // opened only when the local tier lacked the point
			tiers.Vault.Close()
		}
	} else {
		stats, err = c.RestoreDisk(ctx, opts)
	}
	progress.done()
	if errors.Is(err, snapshot.ErrExists) {
		// The library's hint names its option; the CLI's are flags.
		msg := strings.Replace(err.Error(), "(RestoreOptions.Overwrite replaces it)", "(-force replaces it, -incremental updates it)", 1)
		return rephrasedError{msg, err}
	}
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	if *vault != "" {
		fmt.Fprintf(e.stdout, "from the %s tier: ", tier)
	}
	fmt.Fprintf(e.stdout, "restored disk %s to %s: %s (%s data, %s zeros) in %s, %s/s\n", *disk, stats.Path,
		humanize.IBytes(uint64(stats.Size)), humanize.IBytes(uint64(stats.WrittenBytes)), humanize.IBytes(uint64(stats.ZeroBytes)),
		elapsed.Round(time.Millisecond), humanize.IBytes(uint64(float64(stats.Size)/max(elapsed.Seconds(), 1e-9))))
	if *incremental {
		fmt.Fprintf(e.stdout, "  blocks read %d, written %d, skipped %d\n", stats.BlocksRead, stats.BlocksWritten, stats.BlocksSkipped)
	}
	return nil
}

func runVerify(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
	repoDir := fs.String("repo", "", repoFlagUsage)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	structureOnly := fs.Bool("structure-only", false, "check the index, the packs' presence and the block maps, but read no chunk data (fast)")
	subset := fs.String("read-data-subset", "", "read the data of only these packs: `N/M` (group N of M, by pack ID) or P% (at random)")
	var repairFrom listFlag
	fs.Var(&repairFrom, "repair-from", "`DISK=PATH`: re-store damaged chunks that this disk still holds (checked by hash; repeatable)")
	if err := parse(fs, args, map[string]*string{"repo": repoDir}); err != nil {
		return err
	}
	e.noCache = true // verify checks what the store holds, never a local copy
	opts := snapshot.VerifyOptions{StructureOnly: *structureOnly}
	if *subset != "" {
		if *structureOnly {
			return usageError{"-read-data-subset and -structure-only exclude each other"}
		}
		ds, err := snapshot.ParseDataSubset(*subset)
		if err != nil {
			return usageError{"-read-data-subset: " + err.Error()}
		}
		opts.ReadData = &ds
	}
	var repairPaths []string
	for _, arg := range repairFrom {
		_, path, ok := strings.Cut(arg, "=")
		if !ok || path == "" {
			return usageError{fmt.Sprintf("-repair-from %q: want DISK=PATH", arg)}
		}
		repairPaths = append(repairPaths, path)
	}
	repo, err := openRepository(ctx, e, *repoDir)
	if err != nil {
		return err
	}
	progress := newProgress(e, *asJSON, "verify")
	if progress != nil {
		opts.Progress = progress.update
	}
	report, err := repo.Verify(ctx, opts)
	progress.done()
	if err != nil {
		return err
	}
	if len(repairPaths) > 0 && !report.OK() {
		fixed, err := repo.RepairFromDisks(ctx, report, repairPaths)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "repair: %d damaged chunks, %d found on the disks, %d re-stored; verifying again\n", fixed.Wanted, fixed.Found, fixed.Repaired)
		if report, err = repo.Verify(ctx, snapshot.VerifyOptions{StructureOnly: opts.StructureOnly, ReadData: opts.ReadData}); err != nil {
			return err
		}
	}
	if *asJSON {
		if err := printJSON(e, report); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(e.stdout, "checked %d restore points, %d packs, %d blobs, %s read\n",
			report.RestorePoints, report.Packs, report.Blobs, humanize.IBytes(uint64(report.BytesRead)))
		if report.PacksNotRead > 0 {
			why := "-structure-only"
			if opts.ReadData != nil {
				why = "-read-data-subset " + opts.ReadData.String()
			}
			fmt.Fprintf(e.stdout, "%d packs were checked to exist but their data was not read (%s)\n", report.PacksNotRead, why)
		}
		if report.UnindexedPacks > 0 {
			fmt.Fprintf(e.stdout, "%d packs are unreferenced garbage from interrupted creates; gc removes them\n", report.UnindexedPacks)
		}
		for _, d := range report.Damage {
			fmt.Fprintf(e.stdout, "DAMAGED %s: %s", d.Object, d.Reason)
			if len(d.RestorePoints) > 0 {
				fmt.Fprintf(e.stdout, " (needed by %s)", strings.Join(d.RestorePoints, ", "))
			}
			fmt.Fprintln(e.stdout)
		}
	}
	if !report.OK() {
		names := make([]string, len(report.Damage))
		for i, d := range report.Damage {
			names[i] = d.Object
		}
		return damageError{fmt.Errorf("%d damaged objects: %s", len(names), strings.Join(names, "; "))}
	}
	return nil
}

func runDelete(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
	repoDir := fs.String("repo", "", repoFlagUsage)
	collection := fs.String("collection", "", "collection `name`")
	point := fs.String("point", "", "restore point `ID` (or a unique prefix of one)")
	if err := parse(fs, args, map[string]*string{"repo": repoDir, "collection": collection, "point": point}); err != nil {
		return err
	}
	if *point == snapshot.Latest {
		// What latest names changes with every create: a deletion names
		// the point it means.
		return usageError{"delete -point latest: name the restore point by its ID (or a unique prefix)"}
	}
	_, c, err := openCollection(ctx, e, *repoDir, *collection)
	if err != nil {
		return err
	}
	rp, err := c.Get(ctx, *point)
	if err != nil {
		return err
	}
	if err := c.Delete(ctx, rp.ID); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "deleted restore point %s from %s (run gc to reclaim its space)\n", rp.ID, *collection)
	return nil
}

func runGC(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
	repoDir := fs.String("repo", "", repoFlagUsage)
	dryRun := fs.Bool("dry-run", false, "report what would be removed, remove nothing")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	lockWait := fs.Duration("lock-wait", 0, "wait this long for running creates to finish (default: fail at once)")
	ignoreDamaged := fs.Bool("ignore-damaged", false, "treat restore points whose manifest is damaged as deleted (their chunks are swept for good)")
	if err := parse(fs, args, map[string]*string{"repo": repoDir}); err != nil {
		return err
	}
	repo, err := openRepository(ctx, e, *repoDir)
	if err != nil {
		return err
	}
	progress := newProgress(e, *asJSON, "gc")
	opts := snapshot.GCOptions{DryRun: *dryRun, LockWait: *lockWait, IgnoreDamaged: *ignoreDamaged}
	if progress != nil {
		opts.Progress = func(p snapshot.GCProgress) {
			progress.stage("gc " + p.Phase)
			switch p.Phase {
			case "repack":
				progress.update(p.Done, p.Total)
			case "mark":
				progress.updateCount(p.Done, p.Total, "restore points")
			default:
				progress.updateCount(p.Done, p.Total, "packs")
			}
		}
	}
	report, err := repo.GC(ctx, opts)
	progress.done()
	if err != nil {
		return err
	}
	for _, name := range report.DamagedManifests {
		fmt.Fprintf(e.stderr, "diskpoint gc: damaged %s treated as deleted\n", name)
	}
	if *asJSON {
		return printJSON(e, report)
	}
	verb := "reclaimed"
	if *dryRun {
		verb = "would reclaim"
	}
	fmt.Fprintf(e.stdout, "%s %s (%s -> %s): %d packs deleted, %d repacked, %d blobs removed; %d restore points keep %d blobs\n",
		verb, humanize.IBytes(uint64(max(report.BytesReclaimed(), 0))), humanize.IBytes(uint64(report.BytesBefore)), humanize.IBytes(uint64(report.BytesAfter)),
		report.PacksDeleted, report.PacksRepacked, report.BlobsRemoved, report.RestorePoints, report.LiveBlobs)
	if report.PacksDeferred > 0 {
		fmt.Fprintf(e.stdout, "%d packs left in place while readers (restores, exports) may read them; a later gc deletes them\n", report.PacksDeferred)
	}
	if report.UploadsAborted > 0 {
		fmt.Fprintf(e.stdout, "%d interrupted multipart uploads aborted\n", report.UploadsAborted)
	}
	return nil
}

func runUnlock(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
	repoDir := fs.String("repo", "", repoFlagUsage)
	all := fs.Bool("all", false, "remove every lock, live or not: only when no diskpoint runs anywhere")
	if err := parse(fs, args, map[string]*string{"repo": repoDir}); err != nil {
		return err
	}
	repo, err := openRepository(ctx, e, *repoDir)
	if err != nil {
		return err
	}
	removed, err := repo.Unlock(ctx, *all)
	kind := "stale "
	if *all {
		kind = ""
	}
	fmt.Fprintf(e.stdout, "removed %d %slocks\n", removed, kind)
	return err
}
