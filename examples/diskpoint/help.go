package main

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/diskpoint/diskpoint/chain"
)

// synopses are the commands' one-line usages, after "diskpoint COMMAND".
// -repo may be left out when DISKPOINT_REPOSITORY names the repository.
var synopses = map[string]string{
	"init":        "-repo DIR [-block-size SIZE] [-format 1|2] [-encrypt]",
	"keygen":      "",
	"key":         "add|list|remove|passwd -repo DIR [-label NOTE] [-id ID] [-json]",
	"version":     "",
	"collections": "-repo DIR [-json]",
	"create":      "-repo DIR -collection NAME [flags] DISK=PATH|NBD_URI...",
	"list":        "-repo DIR -collection NAME [-json]",
	"show":        "-repo DIR -collection NAME -point ID|PREFIX|latest [-disk DISK] [-json]",
	"restore":     "-repo DIR -collection NAME -point ID|PREFIX|latest -disk DISK -to PATH|DIR [-force | -incremental [-from ID]] [-sync] [-vault LOCATION]",
	"verify":      "-repo DIR [-structure-only | -read-data-subset N/M|P%] [-repair-from DISK=PATH]... [-json]",
	"delete":      "-repo DIR -collection NAME -point ID|PREFIX",
	"gc":          "-repo DIR [-dry-run] [-ignore-damaged] [-lock-wait DURATION] [-json]",
	"unlock":      "-repo DIR [-all]",
	"migrate":     "-repo DIR [-lock-wait DURATION] [-json]",
	"hooks-log":   "-repo DIR -collection NAME [-json]",
	"diff":        "-repo DIR -collection NAME -from ID|PREFIX|latest -to ID|PREFIX|latest -disk DISK [-json]",
	"copy":        "-repo DIR -collection NAME (-point ID|PREFIX|latest | -all) -to-repo DIR -to-collection NAME [-from-key-file FILE | -from-key-command CMD | -from-no-key] [-rate-limit azure|N/DURATION] [-checkpoint SIZE] [-json]",
	"prune":       "-repo DIR -collection NAME [-keep-last N] [-keep-hourly N] [-keep-daily N] [-keep-weekly N] [-keep-monthly N] [-keep-yearly N] [-keep-within DURATION] [-utc] [-dry-run] [-json]",
	"stats":       "-repo DIR [-collection NAME] [-json]",
	"transfer":    "-repo LOCAL -to-repo VAULT [-collection NAME] [-keep-local N [-gc]] [-lock-wait DURATION] [-checkpoint SIZE] [-json]",
	"serve-nbd":   "-repo DIR -collection NAME -point ID|PREFIX|latest [-disk DISK] -listen HOST:PORT|unix:PATH",
	"mount":       "-repo DIR [-allow-other] MOUNTPOINT",
	"files":       "-repo DIR -collection NAME -point ID|PREFIX|latest -disk DISK [-partition N] -to DIR PATH...",
}

// synopsis returns command name's one-line usage.
func synopsis(name string) string {
	if s, ok := synopses[name]; ok {
		return s
	}
	return "[flags]"
}

func runVersion(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
	if err := parse(fs, args, nil); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "diskpoint %s compiled with %s on %s/%s; repository format versions %d and %d (init makes %d unless -format says otherwise)\n",
		moduleVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH, chain.FormatVersion, chain.FormatVersion2, chain.FormatVersion)
	return nil
}

// moduleVersion is the version of the diskpoint module this binary was
// built from: a release's tag, or for a build from a checkout "(devel)"
// with the commit when the build recorded it.
func moduleVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := info.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var revision, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+dirty"
			}
		}
	}
	if v == "(devel)" && revision != "" {
		v += " " + revision[:min(len(revision), 12)] + modified
	}
	return v
}
