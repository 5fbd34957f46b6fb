package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

// Help goes to stdout with status 0, however it is asked for; a command's
// help shows its synopsis and flags; every command has a synopsis.
func TestCLIHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}, {"-help"}, {"help", "help"}} {
		c := startChild(t, args...)
		out := string(c.wait(t))
		if !strings.Contains(out, "usage: diskpoint COMMAND") || c.stderr.Len() != 0 {
			t.Errorf("diskpoint %v: stdout %q, stderr %q", args, out, c.stderr.String())
		}
		for name := range commands {
			if !strings.Contains(out, "  "+name+" ") {
				t.Errorf("diskpoint %v does not list %s", args, name)
			}
		}
	}
	for name := range commands {
		if _, ok := synopses[name]; !ok {
			t.Errorf("command %s has no synopsis", name)
		}
	}
	for _, args := range [][]string{{"help", "restore"}, {"restore", "-h"}, {"restore", "--help"}, {"restore", "-repo", "x", "--help"}} {
		code, out, errOut := cli(t, args...)
		if code != 0 || !strings.Contains(out, "usage: diskpoint restore -repo DIR") || !strings.Contains(out, "\n  -force") || errOut != "" {
			t.Errorf("diskpoint %v: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
	if code, out, errOut := cli(t, "help", "frobnicate"); code != 2 || out != "" || !strings.Contains(errOut, "frobnicate") {
		t.Errorf("help of an unknown command: exit %d %q %q", code, out, errOut)
	}
	// A bad flag is an error: usage on stderr, status 2.
	if code, out, errOut := cli(t, "list", "-bogus"); code != 2 || out != "" || !strings.Contains(errOut, "bogus") {
		t.Errorf("bad flag: exit %d %q %q", code, out, errOut)
	}
}

func TestCLIVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out := string(startChild(t, args...).wait(t))
		if !regexp.MustCompile(`^diskpoint \S.* compiled with go\S+ on \w+/\w+; repository format versions 1 and 2 \(init makes 1 unless -format says otherwise\)\n$`).MatchString(out) ||
			!strings.Contains(out, runtime.Version()) {
			t.Errorf("diskpoint %v printed %q", args, out)
		}
	}
}

// Flags may follow the positional arguments, as restic's and borg's do;
// "--" ends the flags, so a disk path may start with a dash.
func TestCLIFlagsAnywhere(t *testing.T) {
	dir := t.TempDir()
	repo, img := filepath.Join(dir, "repo"), filepath.Join(dir, "a.img")
	demodisk.Create(img, 1<<20, 1, demodisk.MixedImage)
	mustCLI(t, "init", "-repo", repo)
	var rp jsonPoint
	out := mustCLI(t, "create", "-repo", repo, "os="+img, "-collection", "vm", "-json")
	if err := json.Unmarshal([]byte(out), &rp); err != nil || len(rp.Disks) != 1 || rp.Disks[0].Name != "os" {
		t.Fatalf("create with flags after the disks printed %q: %v", out, err)
	}
	dashed := filepath.Join(dir, "-b.img")
	demodisk.Create(dashed, 1<<20, 2, demodisk.MixedImage)
	t.Chdir(dir)
	out = mustCLI(t, "create", "-repo", repo, "-collection", "vm", "-json", "--", "b=-b.img")
	var second jsonPoint
	if err := json.Unmarshal([]byte(out), &second); err != nil {
		t.Fatalf("create -- printed %q: %v", out, err)
	}
	if code, _, errOut := cli(t, "create", "-repo", repo, "-collection", "vm", "--", "-exclude"); code != 2 || !strings.Contains(errOut, `"-exclude"`) {
		t.Errorf("after --, -exclude is a disk argument: exit %d %s", code, errOut)
	}
	// A flag's value may be "--" itself.
	if code, _, errOut := cli(t, "list", "-repo", repo, "-collection", "--"); code != 1 || !strings.Contains(errOut, `"--"`) {
		t.Errorf("list -collection --: exit %d %s", code, errOut)
	}
}

// DISKPOINT_REPOSITORY names the repository when -repo is not given.
func TestCLIRepositoryFromEnvironment(t *testing.T) {
	dir := t.TempDir()
	repo, img := filepath.Join(dir, "repo"), filepath.Join(dir, "a.img")
	demodisk.Create(img, 1<<20, 1, demodisk.MixedImage)
	if code, _, errOut := cli(t, "init"); code != 2 || !strings.Contains(errOut, "DISKPOINT_REPOSITORY") {
		t.Errorf("init without -repo: exit %d %s", code, errOut)
	}
	t.Setenv("DISKPOINT_REPOSITORY", repo)
	mustCLI(t, "init")
	mustCLI(t, "create", "-collection", "vm", "d="+img)
	if out := mustCLI(t, "list", "-collection", "vm", "-json"); !strings.Contains(out, `"d"`) {
		t.Errorf("list: %s", out)
	}
	// -repo wins over the environment.
	other := filepath.Join(dir, "other")
	mustCLI(t, "init", "-repo", other)
	if code, _, errOut := cli(t, "list", "-repo", other, "-collection", "vm"); code != 1 || !strings.Contains(errOut, other) {
		t.Errorf("list -repo other: exit %d %s", code, errOut)
	}
}

// DISKPOINT_KEY_COMMAND's output is the key; a failing command fails with
// its message and exit status 12, as do two key sources at once.
func TestCLIKeyCommand(t *testing.T) {
	dir := t.TempDir()
	repo, img := filepath.Join(dir, "repo"), filepath.Join(dir, "a.img")
	demodisk.Create(img, 1<<20, 1, demodisk.MixedImage)
	key := strings.TrimSpace(mustCLI(t, "keygen"))
	keyFile := filepath.Join(dir, "key")
	os.WriteFile(keyFile, []byte(key), 0o600)
	t.Setenv("DISKPOINT_KEY_COMMAND", "cat '"+keyFile+"'")
	mustCLI(t, "init", "-repo", repo, "-encrypt")
	mustCLI(t, "create", "-repo", repo, "-collection", "vm", "d="+img)
	t.Setenv("DISKPOINT_KEY_COMMAND", "echo no secret store here >&2; exit 4")
	if code, _, errOut := cli(t, "list", "-repo", repo, "-collection", "vm"); code != 12 || !strings.Contains(errOut, "no secret store here") || !strings.Contains(errOut, "exit status 4") {
		t.Errorf("failing key command: exit %d %s", code, errOut)
	}
	t.Setenv("DISKPOINT_KEY_COMMAND", "cat '"+keyFile+"'")
	t.Setenv("DISKPOINT_KEY", key)
	if code, _, errOut := cli(t, "list", "-repo", repo, "-collection", "vm"); code != 12 || !strings.Contains(errOut, "DISKPOINT_KEY and DISKPOINT_KEY_COMMAND") {
		t.Errorf("two key sources: exit %d %s", code, errOut)
	}
}

// Exit statuses say what went wrong, as restic's do; the key hint appears
// only when a key is what is missing.
func TestCLIExitStatuses(t *testing.T) {
	repo, ids, _ := twoPoints(t)
	dir := t.TempDir()
	t.Setenv("DISKPOINT_KEY", "")
	t.Setenv("DISKPOINT_KEY_FILE", "")
	for _, missing := range []string{filepath.Join(dir, "nonexistent"), t.TempDir()} {
		code, _, errOut := cli(t, "list", "-repo", missing, "-collection", "vm")
		if code != 10 || strings.Contains(errOut, "DISKPOINT_KEY") {
			t.Errorf("list of %s: exit %d %q, want 10 without a key hint", missing, code, errOut)
		}
	}

	// 11: the collection is locked (by this process, while the CLI runs in another).
	r, err := snapshot.Open(context.Background(), repo)
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := r.Chain().LockCollection(context.Background(), "vm", "test", 0)
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "a.img")
	demodisk.Create(img, 1<<20, 1, demodisk.MixedImage)
	c := startChild(t, "create", "-repo", repo, "-collection", "vm", "d="+img)
	if err := c.cmd.Wait(); c.cmd.ProcessState.ExitCode() != 11 || !strings.Contains(c.stderr.String(), "lock") {
		t.Errorf("create of a locked collection: %v, exit %d: %s", err, c.cmd.ProcessState.ExitCode(), c.stderr.String())
	}
	unlock()
	r.Close()

	// 13: a rate limit refused, and says when to retry.
	other := filepath.Join(dir, "dr")
	mustCLI(t, "init", "-repo", other)
	copyArgs := func(id string) []string {
		return []string{"copy", "-repo", repo, "-collection", "vm", "-point", id, "-to-repo", other, "-to-collection", "dr", "-rate-limit", "1/1h"}
	}
	mustCLI(t, copyArgs(ids[0])...)
	if code, _, errOut := cli(t, copyArgs(ids[1])...); code != 13 || !strings.Contains(errOut, "retry after 1h") {
		t.Errorf("throttled copy: exit %d %s", code, errOut)
	}
}

// Ctrl-C (SIGINT) ends a command with status 130, SIGTERM with 143.
func TestCLIInterrupted(t *testing.T) {
	for _, tc := range []struct {
		sig  syscall.Signal
		want int
	}{{syscall.SIGINT, 130}, {syscall.SIGTERM, 143}} {
		dir := t.TempDir()
		started := filepath.Join(dir, "started")
		// The key command stands for any long operation: it signals that it
		// runs, then waits for the signal to cancel it.
		c := startChildEnv(t, []string{"DISKPOINT_KEY_COMMAND=touch '" + started + "' && exec sleep 60"}, "list", "-repo", dir, "-collection", "vm")
		deadline := time.Now().Add(30 * time.Second)
		for {
			if _, err := os.Stat(started); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the key command did not start in 30s")
			}
			time.Sleep(time.Millisecond) // polling the file the child makes
		}
		c.cmd.Process.Signal(tc.sig)
		c.cmd.Wait()
		if code := c.cmd.ProcessState.ExitCode(); code != tc.want {
			t.Errorf("%v: exit %d, want %d: %s", tc.sig, code, tc.want, c.stderr.String())
		}
	}
}

// restore onto an existing file needs -force (or -incremental); a link is
// followed; a directory receives DISK.img.
func TestCLIRestoreNeverDestroysSilently(t *testing.T) {
	repo, ids, images := twoPoints(t)
	dir := t.TempDir()
	target := filepath.Join(dir, "t.img")
	os.WriteFile(target, []byte("precious"), 0o640)
	args := []string{"restore", "-repo", repo, "-collection", "vm", "-point", ids[0], "-disk", "d", "-to", target}
	code, _, errOut := cli(t, args...)
	if code != 1 || !strings.Contains(errOut, "-force") || !strings.Contains(errOut, target) || strings.Contains(errOut, "RestoreOptions") {
		t.Fatalf("restore onto an existing file: exit %d %s", code, errOut)
	}
	if string(readAll(t, target)) != "precious" {
		t.Fatal("a refused restore changed the file")
	}
	mustCLI(t, append(args, "-force")...)
	if !bytes.Equal(readAll(t, target), images[0]) {
		t.Fatal("restore -force did not replace the file")
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o640 {
		t.Errorf("the replaced file has mode %v, want 0640", fi.Mode().Perm())
	}
	link := filepath.Join(dir, "link")
	os.Symlink(target, link)
	mustCLI(t, "restore", "-repo", repo, "-collection", "vm", "-point", ids[1], "-disk", "d", "-to", link, "-force")
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 || !bytes.Equal(readAll(t, target), images[1]) {
		t.Fatalf("restore through a link: %v %v", fi.Mode(), err)
	}
	out := mustCLI(t, "restore", "-repo", repo, "-collection", "vm", "-point", ids[1], "-disk", "d", "-to", dir)
	if !bytes.Equal(readAll(t, filepath.Join(dir, "d.img")), images[1]) || !strings.Contains(out, filepath.Join(dir, "d.img")) {
		t.Fatalf("restore into a directory: %s", out)
	}
	if code, _, errOut := cli(t, append(args, "-force", "-incremental")...); code != 2 {
		t.Errorf("-force -incremental: exit %d %s", code, errOut)
	}
}

// -point takes an ID, a unique prefix or latest, which with a disk named
// means the newest point that has the disk.
func TestCLIPointReferences(t *testing.T) {
	repo, ids, images := twoPoints(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "other.img")
	demodisk.Create(img, 1<<20, 5, demodisk.MixedImage)
	// The newest point leaves out d.
	var newest jsonPoint
	json.Unmarshal([]byte(mustCLI(t, "create", "-repo", repo, "-collection", "vm", "-json", "-exclude", "d", "d="+img, "other="+img)), &newest)

	var shown jsonPoint
	json.Unmarshal([]byte(mustCLI(t, "show", "-repo", repo, "-collection", "vm", "-point", "latest", "-disk", "d", "-json")), &shown)
	if shown.ID != ids[1] {
		t.Errorf("show -point latest -disk d: %s, want %s", shown.ID, ids[1])
	}
	json.Unmarshal([]byte(mustCLI(t, "show", "-repo", repo, "-collection", "vm", "-point", "latest", "-json")), &shown)
	if shown.ID != newest.ID {
		t.Errorf("show -point latest: %s, want %s", shown.ID, newest.ID)
	}
	out := filepath.Join(dir, "d.img")
	mustCLI(t, "restore", "-repo", repo, "-collection", "vm", "-point", "latest", "-disk", "d", "-to", out)
	if !bytes.Equal(readAll(t, out), images[1]) {
		t.Error("restore -point latest -disk d restored something else")
	}
	mustCLI(t, "restore", "-repo", repo, "-collection", "vm", "-point", ids[0][:len(ids[0])-1], "-disk", "d", "-to", out, "-force")
	if !bytes.Equal(readAll(t, out), images[0]) {
		t.Error("restore -point PREFIX restored something else")
	}
	code, _, errOut := cli(t, "show", "-repo", repo, "-collection", "vm", "-point", ids[0][:2])
	if code != 1 || !strings.Contains(errOut, "ambiguous") || !strings.Contains(errOut, ids[0]) || !strings.Contains(errOut, ids[1]) {
		t.Errorf("show of an ambiguous prefix: exit %d %s", code, errOut)
	}

	// serve-nbd exports the newest point that has the disk.
	serving := startServeNBD(t, "-repo", repo, "-collection", "vm", "-point", "latest", "-disk", "d")
	if !strings.Contains(serving.line, "of restore point "+ids[1]) {
		t.Errorf("serve-nbd -point latest -disk d said %q, want point %s", serving.line, ids[1])
	}
}

// collections lists the repository's collections; list of a name never
// used is an error naming it, not an empty table.
func TestCLICollections(t *testing.T) {
	repo, ids, _ := twoPoints(t)
	dir := t.TempDir()
	if code, out, errOut := cli(t, "list", "-repo", repo, "-collection", "vn"); code != 1 || out != "" || !strings.Contains(errOut, `"vn"`) || !strings.Contains(errOut, "not found") {
		t.Errorf("list of a mistyped collection: exit %d %q %q", code, out, errOut)
	}
	other := filepath.Join(dir, "dr")
	mustCLI(t, "init", "-repo", other)
	if out := mustCLI(t, "collections", "-repo", other, "-json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("collections of an empty repository: %s", out)
	}
	mustCLI(t, "copy", "-repo", repo, "-collection", "vm", "-point", ids[0], "-to-repo", repo, "-to-collection", "archive")
	var got []struct {
		Name          string `json:"name"`
		RestorePoints int    `json:"restore_points"`
		NewestID      string `json:"newest_id"`
	}
	if err := json.Unmarshal([]byte(mustCLI(t, "collections", "-repo", repo, "-json")), &got); err != nil || len(got) != 2 ||
		got[0].Name != "archive" || got[0].RestorePoints != 1 || got[0].NewestID != ids[0] ||
		got[1].Name != "vm" || got[1].RestorePoints != 2 || got[1].NewestID != ids[1] {
		t.Errorf("collections -json: %+v, %v", got, err)
	}
	out := mustCLI(t, "collections", "-repo", repo)
	if !strings.Contains(out, "COLLECTION") || !strings.Contains(out, "archive") || !strings.Contains(out, ids[1]) {
		t.Errorf("collections: %s", out)
	}
	// A collection whose points are all deleted was used: list shows it empty.
	mustCLI(t, "delete", "-repo", repo, "-collection", "archive", "-point", ids[0])
	mustCLI(t, "copy", "-repo", repo, "-collection", "vm", "-point", ids[0], "-to-repo", repo, "-to-collection", "limited", "-rate-limit", "5/1h")
	mustCLI(t, "delete", "-repo", repo, "-collection", "limited", "-point", ids[0])
	if out := mustCLI(t, "list", "-repo", repo, "-collection", "limited", "-json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("list of a collection with state but no points: %s", out)
	}
}

// copy is idempotent, copy -all copies what the target lacks, and copies
// work between repositories with different keys, or none, with the
// source's key given apart.
func TestCLICopy(t *testing.T) {
	repo, ids, images := twoPoints(t)
	dir := t.TempDir()
	dr := filepath.Join(dir, "dr")
	mustCLI(t, "init", "-repo", dr)
	one := []string{"copy", "-repo", repo, "-collection", "vm", "-point", ids[0], "-to-repo", dr, "-to-collection", "vm"}
	mustCLI(t, one...)
	var again struct {
		ID             string `json:"id"`
		AlreadyPresent bool   `json:"already_present"`
		Blobs          int64  `json:"blobs_copied"`
	}
	out := mustCLI(t, append(one, "-json")...)
	if err := json.Unmarshal([]byte(out), &again); err != nil || again.ID != ids[0] || !again.AlreadyPresent || again.Blobs != 0 {
		t.Errorf("second copy: %s %v", out, err)
	}
	if out := mustCLI(t, one...); !strings.Contains(out, "nothing to copy") {
		t.Errorf("second copy said %q", out)
	}
	all := []string{"copy", "-repo", repo, "-collection", "vm", "-all", "-to-repo", dr, "-to-collection", "vm", "-json"}
	var copied []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(mustCLI(t, all...)), &copied); err != nil || len(copied) != 1 || copied[0].ID != ids[1] {
		t.Errorf("copy -all copied %+v, %v; want only %s", copied, err, ids[1])
	}
	if out := mustCLI(t, all...); strings.TrimSpace(out) != "[]" {
		t.Errorf("copy -all with nothing missing: %s", out)
	}
	for _, bad := range [][]string{{"-all", "-point", ids[0]}, {}} {
		args := append([]string{"copy", "-repo", repo, "-collection", "vm", "-to-repo", dr, "-to-collection", "x"}, bad...)
		if code, _, errOut := cli(t, args...); code != 2 {
			t.Errorf("copy %v: exit %d %s", bad, code, errOut)
		}
	}

	// Into an encrypted repository (DISKPOINT_KEY) from the unencrypted one.
	key := strings.TrimSpace(mustCLI(t, "keygen"))
	t.Setenv("DISKPOINT_KEY", key)
	enc := filepath.Join(dir, "enc")
	mustCLI(t, "init", "-repo", enc, "-encrypt")
	if code, _, errOut := cli(t, "copy", "-repo", repo, "-collection", "vm", "-all", "-to-repo", enc, "-to-collection", "vm"); code != 1 || !strings.Contains(errOut, "not encrypted") {
		t.Errorf("copy from an unencrypted repository with the target's key: exit %d %s", code, errOut)
	}
	mustCLI(t, "copy", "-repo", repo, "-collection", "vm", "-all", "-from-no-key", "-to-repo", enc, "-to-collection", "vm")
	// From it into one with another key: the source's key apart.
	keyFile := filepath.Join(dir, "enc.key")
	os.WriteFile(keyFile, []byte(key), 0o600)
	t.Setenv("DISKPOINT_KEY", strings.TrimSpace(mustCLI(t, "keygen")))
	other := filepath.Join(dir, "other")
	mustCLI(t, "init", "-repo", other, "-encrypt")
	if code, _, errOut := cli(t, "copy", "-repo", enc, "-collection", "vm", "-all", "-to-repo", other, "-to-collection", "vm"); code != 12 || !strings.Contains(errOut, "source") {
		t.Errorf("copy without the source's key: exit %d %s", code, errOut)
	}
	mustCLI(t, "copy", "-repo", enc, "-collection", "vm", "-all", "-from-key-file", keyFile, "-to-repo", other, "-to-collection", "vm")
	out = filepath.Join(dir, "out.img")
	for i, id := range ids {
		mustCLI(t, "restore", "-repo", other, "-collection", "vm", "-point", id, "-disk", "d", "-to", out, "-force")
		if !bytes.Equal(readAll(t, out), images[i]) {
			t.Fatalf("restore of %s after copies across keys differs", id)
		}
	}
	mustCLI(t, "verify", "-repo", other)
	// And back out to an unencrypted repository, the key in DISKPOINT_FROM_KEY_COMMAND.
	t.Setenv("DISKPOINT_KEY", "")
	t.Setenv("DISKPOINT_FROM_KEY_COMMAND", "cat '"+keyFile+"'")
	plain := filepath.Join(dir, "plain")
	mustCLI(t, "init", "-repo", plain)
	mustCLI(t, "copy", "-repo", enc, "-collection", "vm", "-point", "latest", "-to-repo", plain, "-to-collection", "vm")
	mustCLI(t, "restore", "-repo", plain, "-collection", "vm", "-point", ids[1], "-disk", "d", "-to", out, "-force")
	if !bytes.Equal(readAll(t, out), images[1]) {
		t.Fatal("restore after a copy out of an encrypted repository differs")
	}
}

// delete takes an ID or a unique prefix, says which point it deleted, and
// refuses latest (it changes meaning with every create) and an ambiguous
// prefix, deleting nothing.
func TestCLIDeleteNamesItsPoint(t *testing.T) {
	repo, ids, _ := twoPoints(t)
	if code, _, errOut := runBinary(t, nil, "delete", "-repo", repo, "-collection", "vm", "-point", "latest"); code != 2 || !strings.Contains(errOut, "by its ID") {
		t.Errorf("delete -point latest: exit %d, %q; want a usage error", code, errOut)
	}
	if code, _, errOut := runBinary(t, nil, "delete", "-repo", repo, "-collection", "vm", "-point", ids[0][:2]); code != 1 || !strings.Contains(errOut, "ambiguous") {
		t.Errorf("delete of an ambiguous prefix: exit %d, %q", code, errOut)
	}
	out := mustBinary(t, nil, "delete", "-repo", repo, "-collection", "vm", "-point", ids[0][:len(ids[0])-2])
	if !strings.Contains(out, "deleted restore point "+ids[0]) {
		t.Errorf("delete by prefix said %q; want the full ID %s", out, ids[0])
	}
	var left []jsonPoint
	json.Unmarshal([]byte(mustBinary(t, nil, "list", "-repo", repo, "-collection", "vm", "-json")), &left)
	if len(left) != 1 || left[0].ID != ids[1] {
		t.Errorf("after deleting %s by prefix the collection holds %+v", ids[0], left)
	}
	if out := mustBinary(t, nil, "show", "-repo", repo, "-collection", "vm", "-point", ids[1]); !strings.Contains(out, "STORED AT CREATE") {
		t.Errorf("show's disk table does not say its STORED column is what the disk added at create:\n%s", out)
	}
}

// The README's first session works as shown: every "$" line of the block
// between <!-- session:begin --> and <!-- session:end --> runs in a shell
// whose diskpoint is the CLI, exits 0 (or as its "# exit N" says), and each
// output line shown appears in the command's output, once IDs, times,
// sizes, durations and rates are masked.
func TestCLIREADMESession(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "<!-- session:begin -->")
	block, _, ok2 := strings.Cut(block, "<!-- session:end -->")
	if !ok || !ok2 {
		t.Fatal("README has no session block")
	}
	type step struct {
		command string
		exit    int
		shown   []string
	}
	var steps []step
	for _, line := range strings.Split(block, "\n") {
		switch {
		case strings.HasPrefix(line, "$ "):
			st := step{command: strings.TrimPrefix(line, "$ ")}
			if cmd, comment, ok := strings.Cut(st.command, "# exit "); ok {
				st.command = cmd
				st.exit, _ = strconv.Atoi(strings.TrimSpace(comment))
			}
			steps = append(steps, st)
		case strings.HasPrefix(line, "```") || line == "" || len(steps) == 0:
		default:
			steps[len(steps)-1].shown = append(steps[len(steps)-1].shown, line)
		}
	}
	if len(steps) < 10 {
		t.Fatalf("the README session has %d commands", len(steps))
	}
	// A directory whose diskpoint is this test binary acting as the CLI.
	bin := t.TempDir()
	self, err := filepath.Abs(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, filepath.Join(bin, "diskpoint")); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	var exports []string // what the session exported so far
	for _, st := range steps {
		if name, value, ok := strings.Cut(strings.TrimPrefix(st.command, "export "), "="); ok && strings.HasPrefix(st.command, "export ") {
			exports = append(exports, name+"="+strings.TrimSpace(value))
			continue
		}
		cmd := exec.Command("/bin/sh", "-c", st.command)
		cmd.Dir = work
		cmd.Env = append(append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "DISKPOINT_TEST_CLI=1"), exports...)
		out, err := cmd.CombinedOutput()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != st.exit {
			t.Errorf("$ %s: exit %d, the README says %d:\n%s", st.command, code, st.exit, out)
			continue
		}
		got := map[string]bool{}
		for _, l := range strings.Split(string(out), "\n") {
			got[maskVarying(l)] = true
		}
		for _, want := range st.shown {
			if !got[maskVarying(want)] {
				t.Errorf("$ %s: the README shows %q, which the output lacks:\n%s", st.command, want, out)
			}
		}
	}
}

// varying matches what differs between runs of the same session.
var varying = regexp.MustCompile(`\d{8}-\d{6}-[0-9a-f]{6}|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d( [+-]\d\d:\d\d| UTC)?|\d+(\.\d+)?( ?[KMGT]?i?B(/s)?|ms|µs|s|x)?`)

// maskVarying masks IDs, times and numbers in line and collapses runs of
// spaces (column widths follow the values).
func maskVarying(line string) string {
	return strings.Join(strings.Fields(varying.ReplaceAllString(line, "#")), " ")
}

// The README's CLI section names every command and every flag each
// command's help lists: in its synopsis, or in the prose right after.
func TestCLIREADMENamesEveryCommandAndFlag(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "\n## The CLI\n")
	section, _, _ = strings.Cut(section, "\n## ")
	flagLine := regexp.MustCompile(`^  (-[a-z][a-z0-9-]*)`)
	for name := range commands {
		if !strings.Contains(section, "diskpoint "+name) {
			t.Errorf("the README's CLI section has no synopsis of %s", name)
		}
		out := mustBinary(t, nil, "help", name)
		for _, line := range strings.Split(out, "\n") {
			m := flagLine.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			if !regexp.MustCompile(regexp.QuoteMeta(m[1]) + `\b`).MatchString(section) {
				t.Errorf("the README's CLI section does not name %s's flag %s", name, m[1])
			}
		}
	}
}

// A command's synopsis names every flag of its own (the flags every
// command takes aside), unless it says [flags]: a newcomer reads the
// synopsis first.
func TestCLISynopsisNamesItsFlags(t *testing.T) {
	common := map[string]bool{"-q": true, "-v": true, "-cache-dir": true, "-no-cache": true}
	flagLine := regexp.MustCompile(`^  (-[a-z][a-z0-9-]*)`)
	for name := range commands {
		syn := synopsis(name)
		if strings.Contains(syn, "[flags]") {
			continue
		}
		for _, line := range strings.Split(mustBinary(t, nil, "help", name), "\n") {
			m := flagLine.FindStringSubmatch(line)
			if m == nil || common[m[1]] {
				continue
			}
			if !regexp.MustCompile(regexp.QuoteMeta(m[1]) + `\b`).MatchString(syn) {
				t.Errorf("diskpoint %s's synopsis %q does not name its flag %s", name, syn, m[1])
			}
		}
	}
}

// A flag that takes a value names what it takes in its help (-to DIR,
// -on-failure fallback|fail|skip), not Go's type name (-on-failure string;
// "duration" reads well enough).
func TestCLIFlagHelpNamesTheValue(t *testing.T) {
	typeName := regexp.MustCompile(`^  -[a-z][a-z0-9-]* (string|value|int|uint|float)$`)
	for name := range commands {
		for _, line := range strings.Split(mustBinary(t, nil, "help", name), "\n") {
			if typeName.MatchString(line) {
				t.Errorf("diskpoint help %s: %q shows a type, not what the flag takes", name, strings.TrimSpace(line))
			}
		}
	}
}
