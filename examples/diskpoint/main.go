// Command diskpoint is the operator's CLI for diskpoint repositories, in a
// directory or in S3 or Azure Blob storage: take, list, restore and delete
// restore points of VM disks, move them to a vault (transfer), read them
// without restoring (serve-nbd, mount, files), keep the repository healthy
// (verify, gc), and convert a format version 1 repository to version 2 in
// place (migrate).
//
//	diskpoint init    -repo DIR [-block-size SIZE] [-format 1|2] [-encrypt]
//	diskpoint keygen
//	diskpoint key     add|list|remove|passwd -repo DIR [-label NOTE] [-id ID] [-json]
//	diskpoint version
//	diskpoint collections -repo DIR [-json]
//	diskpoint create  -repo DIR -collection NAME [-exclude DISK]... [-changed DISK=RANGES_FILE]... [-bitmap DISK=NAME]... [-config FILE] [-json]
//	                  [-consistency crash|filesystem|application] [-freeze MOUNTPOINT]... [-pre SCRIPT] [-post SCRIPT]
//	                  [-hook-config FILE] [-max-freeze DURATION] [-on-failure fallback|fail|skip] [-rate-limit azure|N/DURATION] DISK=PATH|NBD_URI...
//	diskpoint create  -repo DIR -collection NAME -qmp SOCKET -qmp-nbd SOCKET [-config FILE] [-json] DISK=NODE
//	diskpoint list    -repo DIR -collection NAME [-json]
//	diskpoint show    -repo DIR -collection NAME -point ID|PREFIX|latest [-disk DISK] [-json]
//	diskpoint restore -repo DIR -collection NAME -point ID|PREFIX|latest -disk DISK -to PATH|DIR [-force | -incremental [-from ID]] [-sync]
//	                  [-vault LOCATION]
//	diskpoint verify  -repo DIR [-structure-only | -read-data-subset N/M|P%] [-repair-from DISK=PATH]... [-json]
//	diskpoint delete  -repo DIR -collection NAME -point ID|PREFIX
//	diskpoint gc      -repo DIR [-dry-run] [-ignore-damaged] [-lock-wait DURATION] [-json]
//	diskpoint migrate -repo DIR [-lock-wait DURATION] [-json]
//	diskpoint stats   -repo DIR [-collection NAME] [-json]
//	diskpoint unlock  -repo DIR [-all]
//	diskpoint hooks-log -repo DIR -collection NAME [-json]
//	diskpoint diff    -repo DIR -collection NAME -from ID|PREFIX|latest -to ID|PREFIX|latest -disk DISK [-json]
//	diskpoint copy    -repo DIR -collection NAME (-point ID|PREFIX|latest | -all) -to-repo DIR -to-collection NAME
//	                  [-from-key-file FILE | -from-key-command CMD | -from-no-key] [-rate-limit azure|N/DURATION] [-checkpoint SIZE] [-json]
//	diskpoint prune   -repo DIR -collection NAME [-keep-last N] [-keep-hourly N] [-keep-daily N] [-keep-weekly N] [-keep-monthly N] [-keep-yearly N]
//	                  [-keep-within DURATION] [-utc] [-dry-run] [-json]
//	diskpoint transfer -repo LOCAL -to-repo VAULT [-collection NAME] [-keep-local N [-gc]] [-lock-wait DURATION] [-checkpoint SIZE] [-json]
//	diskpoint serve-nbd -repo DIR -collection NAME -point ID|PREFIX|latest [-disk DISK] -listen ADDR
//	diskpoint mount   -repo DIR [-allow-other] MOUNTPOINT
//	diskpoint files   -repo DIR -collection NAME -point ID|PREFIX|latest -disk DISK [-partition N] -to DIR PATH...
//	diskpoint help [COMMAND]
//
// Flags may come before or after the other arguments; "--" ends them.
// -point takes an ID, a unique prefix of one, or latest (the newest restore
// point that has the named disk). Every command also takes -q (draw no
// progress) and -v (more detail, and a summary line). Progress is drawn on
// stderr, only when stderr is a terminal.
//
// -repo and -to-repo name a directory, local:PATH,
// s3:http[s]://HOST/BUCKET/PREFIX (https when no scheme is given) or
// azure:CONTAINER:/PREFIX; any other scheme is refused. S3 credentials come
// from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN (or
// ~/.aws/credentials), Azure's from AZURE_STORAGE_ACCOUNT and
// AZURE_STORAGE_KEY or AZURE_STORAGE_CONNECTION_STRING. A remote
// repository's index files and tree packs are cached, verified, in
// $XDG_CACHE_HOME/diskpoint/REPO-ID (-cache-dir DIR: DIR/REPO-ID; -no-cache:
// none); verify never reads through the cache.
//
// Environment: DISKPOINT_REPOSITORY names the repository when -repo is not
// given, DISKPOINT_TO_REPOSITORY the target when -to-repo is not. An encrypted repository's key comes from DISKPOINT_KEY (64 hex
// digits), the file DISKPOINT_KEY_FILE names, or what the shell command
// DISKPOINT_KEY_COMMAND prints; never from the command line. An encrypted
// format 2 repository opens with a key or a password, which comes from
// DISKPOINT_PASSWORD, DISKPOINT_PASSWORD_FILE or DISKPOINT_PASSWORD_COMMAND
// (a file's or command's final line end is not part of it). copy reads its
// source's key from -from-key-file, -from-key-command or
// DISKPOINT_FROM_KEY, DISKPOINT_FROM_KEY_FILE, DISKPOINT_FROM_KEY_COMMAND
// (a password from DISKPOINT_FROM_PASSWORD and its _FILE and _COMMAND).
// key add and key passwd read the new credential from DISKPOINT_NEW_KEY,
// DISKPOINT_NEW_KEY_FILE, DISKPOINT_NEW_KEY_COMMAND or DISKPOINT_NEW_PASSWORD,
// DISKPOINT_NEW_PASSWORD_FILE, DISKPOINT_NEW_PASSWORD_COMMAND.
// DISKPOINT_CPUPROFILE=FILE writes a CPU profile of the command to FILE, and
// DISKPOINT_MEMPROFILE=FILE a heap profile at its end, and
// DISKPOINT_TRACE=FILE an execution trace (go tool trace FILE; its -pprof=
// syscall and -pprof=sync show where the wall time went while off the CPU).
//
// Exit statuses, numbered as restic 0.17 numbers them: 0 success, 1 failure
// (with a one-line error on stderr), 2 a command line it cannot parse, 3
// verify found damage, 10 the repository does not exist, 11 locked, 12 a
// wrong or missing key, 13 throttled by a rate limit (the error says when
// to retry), 130 interrupted by Ctrl-C, 143 terminated by SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/diskpoint/diskpoint/internal/profiling"
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
	"migrate":   {"convert a version 1 repository to format version 2 in place", runMigrate},
	"unlock":    {"remove stale locks (-all: every lock)", runUnlock},
	"hooks-log": {"show a collection's hook runs", runHooksLog},
	"diff":      {"list the byte ranges that differ between two restore points", runDiff},
	"copy":      {"copy a restore point to another collection or repository", runCopy},
	"transfer":  {"copy the restore points a vault lacks from the local tier, then prune the local tier", runTransfer},
	"prune":     {"delete restore points a retention policy does not keep", runPrune},
	"stats":     {"show sizes: logical, stored, freed if deleted, dedup ratio", runStats},
	"serve-nbd": {"serve the disks of a restore point (or one) read-only over NBD", runServeNBD},
	"mount":     {"mount the restore points read-only as files (FUSE)", runMount},
	"files":     {"copy files out of a file system on a disk of a restore point (root)", runFiles},
	"keygen":    {"print a new random key for an encrypted repository", runKeygen},
	"key":       {"list, add, remove or change the credentials of an encrypted format 2 repository", runKey},

	"collections": {"list the repository's collections", runCollections},
	"version":     {"print the versions of diskpoint, Go and the repository format", runVersion},
}

// env is what commands write to, so tests can run them in-process.
type env struct {
	stdout, stderr io.Writer
	// terminal: stderr is a terminal, so progress may be drawn there.
	terminal bool
	// quiet and verbose are -q and -v (addOutputFlags).
	quiet, verbose bool
	// cacheDir and noCache are -cache-dir and -no-cache (addCacheFlags).
	cacheDir string
	noCache  bool
}

// usageError marks a bad command line (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func main() {
	os.Exit(mainStatus())
}

// mainStatus runs the process's command line and returns its exit status;
// SIGINT and SIGTERM cancel the command.
func mainStatus() int {
	ctx, stop := signalContext()
	defer stop()
	e := &env{stdout: os.Stdout, stderr: os.Stderr, terminal: isTerminal(os.Stderr)}
	return runProfiled(ctx, e, os.Args[1:])
}

// runProfiled is run, with the profiles DISKPOINT_CPUPROFILE,
// DISKPOINT_MEMPROFILE and DISKPOINT_TRACE ask for.
func runProfiled(ctx context.Context, e *env, args []string) int {
	stop := profiling.FromEnv(func(err error) { fmt.Fprintf(os.Stderr, "diskpoint: %v\n", err) })
	defer stop()
	return run(ctx, e, args)
}

// run executes one command line and returns the exit status.
func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 {
		usage(e.stderr)
		return exitUsage
	}
	if isHelpFlag(args[0]) || args[0] == "help" {
		if len(args) > 1 && args[0] == "help" {
			return commandHelp(ctx, e, args[1])
		}
		usage(e.stdout)
		return exitOK
	}
	if args[0] == "-version" || args[0] == "--version" {
		args[0] = "version"
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(e.stderr, "diskpoint: unknown command %q (try: diskpoint help)\n", args[0])
		return exitUsage
	}
	fs := newFlagSet(args[0], e.stderr)
	if wantsHelp(args[1:]) {
		fs.SetOutput(e.stdout) // asked-for help is output, not an error
	}
	addOutputFlags(fs, e)
	addCacheFlags(fs, e)
	err := cmd.run(ctx, e, fs, args[1:])
	return exitStatus(ctx, e, args[0], err)
}

// newFlagSet returns the flag set of command name, whose usage is the
// command's synopsis and flags.
func newFlagSet(name string, output io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("diskpoint "+name, flag.ContinueOnError)
	fs.SetOutput(output)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: %s\n\n%s\n\nflags:\n", strings.TrimSpace("diskpoint "+name+" "+synopsis(name)), commands[name].summary)
		fs.PrintDefaults()
		fmt.Fprintln(w, "\nFlags may come before or after the other arguments; -- ends the flags.")
		if fs.Lookup("repo") != nil {
			fmt.Fprintln(w, "-repo may be left out when "+repositoryEnv+" names the repository.")
		}
		if fs.Lookup("to-repo") != nil {
			fmt.Fprintln(w, "-to-repo may be left out when "+toRepositoryEnv+" names the target.")
		}
	}
	return fs
}

func isHelpFlag(arg string) bool {
	switch arg {
	case "-h", "-help", "--h", "--help":
		return true
	}
	return false
}

// wantsHelp reports whether args ask for help before any "--".
func wantsHelp(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if isHelpFlag(a) {
			return true
		}
	}
	return false
}

// commandHelp prints the help of command name on stdout: its flag set,
// asked for -h, prints it without running the command.
func commandHelp(ctx context.Context, e *env, name string) int {
	if name == "help" { // it is listed among the commands
		usage(e.stdout)
		return exitOK
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(e.stderr, "diskpoint help: unknown command %q (try: diskpoint help)\n", name)
		return exitUsage
	}
	fs := newFlagSet(name, e.stdout)
	addOutputFlags(fs, e)
	addCacheFlags(fs, e)
	err := cmd.run(ctx, e, fs, []string{"-h"})
	if !errors.Is(err, flag.ErrHelp) {
		return exitStatus(ctx, e, name, err)
	}
	return exitOK
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: diskpoint COMMAND [flags] [arguments]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(w, "  %-11s %s\n", name, commands[name].summary)
	}
	fmt.Fprintf(w, "  %-11s %s\n", "help", "print this, or with a command's name its flags")
	fmt.Fprint(w, `
Run 'diskpoint help COMMAND' (or 'diskpoint COMMAND -h') for a command's flags.

environment:
  DISKPOINT_REPOSITORY   the repository, when -repo is not given
  DISKPOINT_TO_REPOSITORY
                         the target repository, when -to-repo is not given
  DISKPOINT_KEY          an encrypted repository's key (64 hex digits), or
  DISKPOINT_KEY_FILE     a file holding it, or
  DISKPOINT_KEY_COMMAND  a shell command printing it
  DISKPOINT_PASSWORD     a format 2 repository's password instead of a key
                         (also _FILE and _COMMAND, as for the key)
  DISKPOINT_NEW_KEY, DISKPOINT_NEW_PASSWORD
                         key add and key passwd: the new credential
                         (also _FILE and _COMMAND)
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN
                         an s3: repository's credentials
  AZURE_STORAGE_ACCOUNT, AZURE_STORAGE_KEY, AZURE_STORAGE_CONNECTION_STRING
                         an azure: repository's credentials
  XDG_CACHE_HOME         remote repositories' cache: $XDG_CACHE_HOME/diskpoint

exit status: 0 success, 1 failure, 2 usage, 3 verify found damage,
10 no repository, 11 locked, 12 wrong or missing key, 13 throttled,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM)
`)
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// repositoryEnv names the repository when a command's -repo is not given.
const repositoryEnv = "DISKPOINT_REPOSITORY"

// toRepositoryEnv names the target repository when -to-repo is not given.
const toRepositoryEnv = "DISKPOINT_TO_REPOSITORY"

// parse parses flags, which may come before, between or after the
// positional arguments (restic's and borg's command lines put them
// anywhere), and insists on the required ones. "--" ends the flags. A
// missing -repo is taken from DISKPOINT_REPOSITORY.
func parse(fs *flag.FlagSet, args []string, required map[string]*string) error {
	if err := parseInterleaved(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if repo, ok := required["repo"]; ok && *repo == "" {
		*repo = os.Getenv(repositoryEnv)
	}
	if repo, ok := required["to-repo"]; ok && *repo == "" {
		*repo = os.Getenv(toRepositoryEnv)
	}
	var missing []string
	for name, v := range required {
		if *v == "" {
			missing = append(missing, "-"+name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		msg := "missing " + strings.Join(missing, ", ")
		switch {
		case slices.Contains(missing, "-repo") && slices.Contains(missing, "-to-repo"):
			msg += " (or set " + repositoryEnv + " and " + toRepositoryEnv + ")"
		case slices.Contains(missing, "-repo"):
			msg += " (or set " + repositoryEnv + ")"
		case slices.Contains(missing, "-to-repo"):
			msg += " (or set " + toRepositoryEnv + ")"
		}
		return usageError{msg}
	}
	return nil
}

// parseInterleaved parses args with the standard flag package, which stops
// at the first positional argument: it sets the positional arguments aside
// and parses on, then leaves them all in fs.Args().
func parseInterleaved(fs *flag.FlagSet, args []string) error {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		rest := fs.Args()
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" && !isFlagValue(fs, args[:used]) {
			positional = append(positional, rest...) // after "--", all are arguments
			break
		}
		if len(rest) == 0 {
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	// Parsing "--" alone sets no flag and leaves the arguments in fs.Args().
	return fs.Parse(append([]string{"--"}, positional...))
}

// isFlagValue reports whether the last of parsed is the value of a flag
// before it (as in -collection --) rather than a flag or "--".
func isFlagValue(fs *flag.FlagSet, parsed []string) bool {
	if len(parsed) < 2 {
		return false
	}
	prev := parsed[len(parsed)-2]
	if !strings.HasPrefix(prev, "-") || prev == "-" || prev == "--" {
		return false
	}
	name := strings.TrimPrefix(strings.TrimPrefix(prev, "-"), "-")
	if strings.Contains(name, "=") {
		return false
	}
	f := fs.Lookup(name)
	if f == nil {
		return false
	}
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return !ok || !b.IsBoolFlag()
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }
