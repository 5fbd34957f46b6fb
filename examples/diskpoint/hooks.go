package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/diskpoint/diskpoint/consistency"
	"github.com/diskpoint/diskpoint/snapshot"
)

// hookFlags are create's consistency flags.
type hookFlags struct {
	mode          *string
	freeze        listFlag
	pre, post     *string
	config        *string
	maxFreeze     *time.Duration
	onFailure     *string
	allowInsecure *bool
	rateLimit     *string
	lockWait      *time.Duration
}

func addHookFlags(fs *flag.FlagSet) *hookFlags {
	h := &hookFlags{
		mode:          fs.String("consistency", "crash", "`mode` to ask for: crash, filesystem or application; the restore point records what was achieved"),
		pre:           fs.String("pre", "", "pre `script` (application mode), run directly, not by a shell"),
		post:          fs.String("post", "", "post `script` (application mode)"),
		config:        fs.String("hook-config", "", "Azure-style VMSnapshotScriptPluginConfig.json `file` for the scripts"),
		maxFreeze:     fs.Duration("max-freeze", consistency.DefaultMaxFreeze, "longest the disks may be held still; past it everything is thawed and the create fails"),
		onFailure:     fs.String("on-failure", "", "when hooks fail: `fallback|fail|skip` (default: the hook config's continueBackupOnFailure, else fallback)"),
		allowInsecure: fs.Bool("allow-insecure-hooks", false, "run hook scripts and configs that others can write"),
		rateLimit:     fs.String("rate-limit", "", "limit creates per mode: `azure|N/DURATION`, azure being 3 an hour, e.g. 6/1h"),
		lockWait:      fs.Duration("lock-wait", 0, "wait this long for another create of the collection to finish (default: fail at once)"),
	}
	fs.Var(&h.freeze, "freeze", "`MOUNTPOINT` to freeze with FIFREEZE in filesystem and application modes (repeatable)")
	return h
}

// apply turns the flags into hooks and policies, by consistency.PlanHooks,
// the same mapping a library user gets. A command line whose flags the
// mode would ignore is refused (a usage error): a restore point records
// what happened, and a flag that silently does nothing would make that a
// surprise.
func (h *hookFlags) apply(opts *snapshot.CreateOptions) error {
	mode, err := consistency.ParseMode(*h.mode)
	if err != nil {
		return usageError{err.Error()}
	}
	settings := consistency.HookSettings{
		Mode:              mode,
		PreScript:         *h.pre,
		PostScript:        *h.post,
		FreezeMountPoints: h.freeze,
		AllowInsecure:     *h.allowInsecure,
	}
	switch *h.onFailure {
	case "":
	case "fallback":
		settings.OnFailure = new(consistency.FallBack)
	case "fail":
		settings.OnFailure = new(consistency.Fail)
	case "skip":
		settings.OnFailure = new(consistency.Skip)
	default:
		return usageError{fmt.Sprintf("-on-failure %q: want fallback, fail or skip", *h.onFailure)}
	}
	if *h.config != "" {
		cfg, err := consistency.LoadScriptConfig(*h.config, *h.allowInsecure)
		if err != nil {
			return err
		}
		settings.ScriptConfig = &cfg
	}
	plan, err := consistency.PlanHooks(settings)
	if errors.Is(err, consistency.ErrConflictingSettings) {
		return usageError{fmt.Sprintf("%v (given: -consistency %s%s)", err, mode, h.given())}
	}
	if err != nil {
		return err
	}
	opts.Consistency, opts.Hooks, opts.OnFailure = plan.Mode, plan.Hooks, plan.OnFailure
	opts.MaxFreeze, opts.LockWait = *h.maxFreeze, *h.lockWait
	if *h.rateLimit != "" {
		limit, err := parseRateLimit(*h.rateLimit)
		if err != nil {
			return usageError{"-rate-limit: " + err.Error()}
		}
		opts.RateLimit = &limit
	}
	return nil
}

// warnCreated writes a new restore point's warnings to stderr, whatever
// the output format: a label weaker than crash-consistent, and failures
// that did not spoil it (a post script). The exit status stays 0: the
// restore point is stored.
func warnCreated(e *env, rp *snapshot.RestorePoint) {
	if rp.Consistency == consistency.Inconsistent {
		fmt.Fprintf(e.stderr, "diskpoint create: warning: restore point %s is inconsistent (not even crash-consistent): %s\n", rp.ID, oneLine(rp.FallbackReason))
	}
	for _, w := range rp.Warnings {
		fmt.Fprintf(e.stderr, "diskpoint create: warning: restore point %s: %s\n", rp.ID, oneLine(w))
	}
}

// consistencyLabel is a restore point's achieved mode as people read it.
func consistencyLabel(rp *snapshot.RestorePoint) string {
	if rp.Consistency == consistency.Inconsistent {
		return "inconsistent"
	}
	return string(rp.Consistency) + "-consistent"
}

// captureSummary says how long the disks were held still, if anything held
// them, and how far apart the first and last disk were captured.
func captureSummary(rp *snapshot.RestorePoint) string {
	held := fmt.Sprintf("held still %d ms", rp.FreezeMillis)
	if rp.Consistency == consistency.Inconsistent {
		held = "nothing held the disks still"
	}
	return fmt.Sprintf("%s; first to last disk captured over %d ms", held, rp.CaptureSpreadMillis)
}

// given lists the hook flags given on the command line, for an error that
// names them.
func (h *hookFlags) given() string {
	var flags strings.Builder
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"-freeze", len(h.freeze) > 0}, {"-pre", *h.pre != ""}, {"-post", *h.post != ""},
		{"-hook-config", *h.config != ""}, {"-on-failure", *h.onFailure != ""},
	} {
		if f.set {
			flags.WriteString(" " + f.name)
		}
	}
	return flags.String()
}

func parseRateLimit(s string) (snapshot.RateLimit, error) {
	if s == "azure" {
		return snapshot.AzureRateLimit, nil
	}
	n, per, ok := strings.Cut(s, "/")
	max, err1 := strconv.Atoi(n)
	d, err2 := time.ParseDuration(per)
	if !ok || err1 != nil || err2 != nil || max < 1 || d <= 0 {
		return snapshot.RateLimit{}, fmt.Errorf("%q: want azure or N/DURATION such as 3/1h", s)
	}
	return snapshot.RateLimit{Max: max, Per: d}, nil
}

func runHooksLog(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
	repoDir := fs.String("repo", "", repoFlagUsage)
	collection := fs.String("collection", "", "collection `name`")
	asJSON := fs.Bool("json", false, "print JSON lines, as stored")
	if err := parse(fs, args, map[string]*string{"repo": repoDir, "collection": collection}); err != nil {
		return err
	}
	_, c, err := openCollection(ctx, e, *repoDir, *collection)
	if err != nil {
		return err
	}
	// Runs are printed as they are read, one stored log at a time.
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		for r, err := range c.HookLog(ctx) {
			if err != nil {
				return err
			}
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	}
	// The table is aligned in chunks of hooksLogTableRows: a tabwriter holds
	// what it has not flushed.
	tw := tabwriter.NewWriter(e.stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tHOOK\tPHASE\tOUTCOME\tMS\tCOMMAND\tEXIT\tDETAIL")
	rows := 0
	for r, err := range c.HookLog(ctx) {
		if err != nil {
			tw.Flush()
			return err
		}
		exit := "-"
		if r.ExitCode != nil {
			exit = strconv.Itoa(*r.ExitCode)
		}
		command := strings.TrimSpace(r.Command + " " + strings.Join(r.Params, " "))
		detail := oneLine(r.Output) // what the script said; the exit code is beside it
		if detail == "" {
			detail = oneLine(r.Error)
		}
		if len(detail) > 80 {
			detail = detail[:80] + "…"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.Time.Local().Format(time.DateTime), r.Hook, r.Phase, r.Outcome, r.DurationMS, command, exit, detail)
		if rows++; rows%hooksLogTableRows == 0 {
			if err := tw.Flush(); err != nil {
				return err
			}
		}
	}
	return tw.Flush()
}

// hooksLogTableRows is how many runs hooks-log aligns and prints at a time.
const hooksLogTableRows = 200
