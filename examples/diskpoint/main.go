// Command diskpoint is the operator's CLI for diskpoint repositories: take,
// list, restore and delete restore points of VM disks, and keep the
// repository healthy (verify, gc).
//
//	diskpoint init    -repo DIR [-block-size SIZE] [-encrypt]
//	diskpoint keygen
//	diskpoint create  -repo DIR -collection NAME [-exclude DISK]... [-changed DISK=RANGES_FILE]... [-config FILE] [-json]
//	                  [-consistency crash|filesystem|application] [-freeze MOUNTPOINT]... [-pre SCRIPT] [-post SCRIPT]
//	                  [-hook-config FILE] [-max-freeze DURATION] [-on-failure fallback|fail|skip] [-rate-limit azure|N/DURATION] DISK=PATH...
//	diskpoint list    -repo DIR -collection NAME [-json]
//	diskpoint show    -repo DIR -collection NAME -point ID|latest [-json]
//	diskpoint restore -repo DIR -collection NAME -point ID|latest -disk DISK -to PATH [-incremental [-from ID]]
//	diskpoint verify  -repo DIR [-structure-only | -read-data-subset N/M|P%] [-repair-from DISK=PATH]... [-json]
//	diskpoint delete  -repo DIR -collection NAME -point ID
//	diskpoint gc      -repo DIR [-dry-run] [-ignore-damaged] [-lock-wait DURATION] [-json]
//	diskpoint stats   -repo DIR [-collection NAME] [-json]
//	diskpoint unlock  -repo DIR [-all]
//	diskpoint hooks-log -repo DIR -collection NAME [-json]
//	diskpoint diff    -repo DIR -collection NAME -from ID -to ID -disk DISK [-json]
//	diskpoint copy    -repo DIR -collection NAME -point ID -to-repo DIR -to-collection NAME [-json]
//	diskpoint prune   -repo DIR -collection NAME [-keep-last N] [-keep-hourly N] [-keep-daily N] [-keep-weekly N] [-keep-monthly N] [-keep-yearly N]
//	                  [-keep-within DURATION] [-utc] [-dry-run] [-json]
//	diskpoint serve-nbd -repo DIR -collection NAME -point ID -disk DISK -listen ADDR
//
// Every command also takes -q (draw no progress) and -v (more detail, and a
// summary line). Progress is drawn on stderr, only when stderr is a terminal.
//
// DISKPOINT_CPUPROFILE=FILE writes a CPU profile of the command to FILE, and
// DISKPOINT_MEMPROFILE=FILE a heap profile at its end.
//
// An encrypted repository's key comes from DISKPOINT_KEY (64 hex digits) or
// the file DISKPOINT_KEY_FILE names; never from the command line.
//
// It exits 0 on success and 1 with a one-line error on stderr otherwise (2
// for a command line it cannot parse).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"syscall"
)

// command is one subcommand: its flags are defined by setup, and run does
// the work with the parsed flags and remaining arguments.
type command struct {
	summary string
	run     func(ctx context.Context, env *env, fs *flag.FlagSet, args []string) error
}

var commands = map[string]command{
	"init":      {"create a repository", runInit},
	"create":    {"take a restore point of disks", runCreate},
	"list":      {"list a collection's restore points", runList},
	"show":      {"show one restore point", runShow},
	"restore":   {"restore one disk of a restore point", runRestore},
	"verify":    {"check every byte of the repository", runVerify},
	"delete":    {"delete a restore point", runDelete},
	"gc":        {"reclaim space no restore point needs", runGC},
	"unlock":    {"remove stale locks (-all: every lock)", runUnlock},
	"hooks-log": {"show a collection's hook runs", runHooksLog},
	"diff":      {"list the byte ranges that differ between two restore points", runDiff},
	"copy":      {"copy a restore point to another collection or repository", runCopy},
	"prune":     {"delete restore points a retention policy does not keep", runPrune},
	"stats":     {"show sizes: logical, stored, freed if deleted, dedup ratio", runStats},
	"serve-nbd": {"serve a disk of a restore point read-only over NBD", runServeNBD},
	"keygen":    {"print a new random key for an encrypted repository", runKeygen},
}

// env is what commands write to, so tests can run them in-process.
type env struct {
	stdout, stderr io.Writer
	// terminal: stderr is a terminal, so progress may be drawn there.
	terminal bool
	// quiet and verbose are -q and -v (addOutputFlags).
	quiet, verbose bool
}

// usageError marks a bad command line (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e := &env{stdout: os.Stdout, stderr: os.Stderr, terminal: isTerminal(os.Stderr)}
	os.Exit(runProfiled(ctx, e, os.Args[1:]))
}

// runProfiled is run, with the profiles DISKPOINT_CPUPROFILE and
// DISKPOINT_MEMPROFILE ask for.
func runProfiled(ctx context.Context, e *env, args []string) int {
	stopProfile := startProfile(os.Getenv("DISKPOINT_CPUPROFILE"))
	status := run(ctx, e, args)
	stopProfile()
	writeHeapProfile(os.Getenv("DISKPOINT_MEMPROFILE"))
	return status
}

// writeHeapProfile writes what the heap holds at the command's end to path,
// if set (go tool pprof -sample_index=inuse_space FILE).
func writeHeapProfile(path string) {
	if path == "" {
		return
	}
	runtime.GC() // the profile shows the heap as of the last collection
	f, err := os.Create(path)
	if err == nil {
		err = pprof.WriteHeapProfile(f)
		f.Close()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "diskpoint: DISKPOINT_MEMPROFILE: %v\n", err)
	}
}

// startProfile writes a CPU profile of the whole command to path, if set:
// how the benchmarks' figures are explained (go tool pprof FILE).
func startProfile(path string) (stop func()) {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "diskpoint: DISKPOINT_CPUPROFILE: %v\n", err)
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// run executes one command line and returns the exit status.
func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "help" {
		usage(e.stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(e.stderr, "diskpoint: unknown command %q (try: diskpoint help)\n", args[0])
		return 2
	}
	fs := flag.NewFlagSet("diskpoint "+args[0], flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	addOutputFlags(fs, e)
	err := cmd.run(ctx, e, fs, args[1:])
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(e.stderr, "diskpoint %s: %s\n", args[0], oneLine(err.Error()))
		return 2
	default:
		fmt.Fprintf(e.stderr, "diskpoint %s: %s\n", args[0], oneLine(err.Error()))
		return 1
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: diskpoint COMMAND [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(w, "  %-10s %s\n", name, commands[name].summary)
	}
	fmt.Fprintln(w, "\nRun 'diskpoint COMMAND -h' for a command's flags.")
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// parse parses flags and insists on the required ones.
func parse(fs *flag.FlagSet, args []string, required map[string]*string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	var missing []string
	for name, v := range required {
		if *v == "" {
			missing = append(missing, "-"+name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		return usageError{"missing " + strings.Join(missing, ", ")}
	}
	return nil
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }
