package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/internal/objserver"
)

// runBinaryIn is runBinary with the child's working directory set to dir,
// so that a test can see what a command created there.
func runBinaryIn(t *testing.T, dir string, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "DISKPOINT_TEST_CLI=1"), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return exit.ExitCode(), stdout.String(), stderr.String()
	case err != nil:
		t.Fatal(err)
	}
	return 0, stdout.String(), stderr.String()
}

// noCredentials blanks every variable a store could take credentials
// from, and points HOME at an empty directory (no ~/.aws/credentials; the
// cache goes to its .cache, as XDG_CACHE_HOME is blanked too).
func noCredentials(t *testing.T) []string {
	return []string{"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "AWS_SESSION_TOKEN=", "AWS_SHARED_CREDENTIALS_FILE=",
		"AZURE_STORAGE_ACCOUNT=", "AZURE_STORAGE_KEY=", "AZURE_STORAGE_CONNECTION_STRING=", "HOME=" + t.TempDir(), "XDG_CACHE_HOME="}
}

// A -repo with a scheme diskpoint does not know is refused, and nothing
// is created: no directory named after it, as init used to make. A
// directory whose name has a colon is reached with local:.
func TestCLIRepoUnknownSchemeRefused(t *testing.T) {
	dir := t.TempDir()
	for _, repo := range []string{"foo:bar", "s3x:http://127.0.0.1:9000/b/p", "sftp:host:/srv/repo", "s3:http:", "s3:http://127.0.0.1:9000"} {
		code, _, errOut := runBinaryIn(t, dir, nil, "init", "-repo", repo)
		if code != exitUsage || !strings.Contains(errOut, repo) {
			t.Errorf("init -repo %s: exit %d, %q; want exit %d naming it", repo, code, errOut, exitUsage)
		}
		if strings.HasPrefix(repo, "foo:") && !strings.Contains(errOut, `unknown repository scheme "foo:"`) {
			t.Errorf("init -repo %s: %q; want it to say the scheme is unknown", repo, errOut)
		}
		code, _, errOut = runBinaryIn(t, dir, []string{"DISKPOINT_REPOSITORY=" + repo}, "list", "-collection", "vm")
		if code != exitUsage || !strings.Contains(errOut, repo) {
			t.Errorf("DISKPOINT_REPOSITORY=%s list: exit %d, %q; want exit %d", repo, code, errOut, exitUsage)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("refused locations left %v behind", entries)
	}
	if code, _, errOut := runBinaryIn(t, dir, nil, "init", "-repo", "local:a:b"); code != 0 {
		t.Fatalf("init -repo local:a:b: exit %d: %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "a:b", "config")); err != nil {
		t.Fatalf("init -repo local:a:b made no repository in a:b: %v", err)
	}
	if code, _, errOut := runBinaryIn(t, dir, nil, "collections", "-repo", "local:a:b"); code != 0 {
		t.Fatalf("collections -repo local:a:b: exit %d: %s", code, errOut)
	}
}

// Without credentials in the environment, an s3: or azure: repository is
// a clear error that says what to set, and nothing is created.
func TestCLIRepoMissingCredentials(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ repo, says string }{
		{"s3:http://127.0.0.1:9/bucket/repo", "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"},
		{"azure:backups:/repo", "set AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY, or AZURE_STORAGE_CONNECTION_STRING"},
	} {
		for _, args := range [][]string{{"init", "-repo", tc.repo}, {"list", "-repo", tc.repo, "-collection", "vm"}} {
			code, _, errOut := runBinaryIn(t, dir, noCredentials(t), args...)
			if code != exitFailure || !strings.Contains(errOut, "no credentials") || !strings.Contains(errOut, tc.says) {
				t.Errorf("%v: exit %d, %q; want exit %d saying %q", args, code, errOut, exitFailure, tc.says)
			}
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("refused locations left %v behind", entries)
	}
}

// cliRoundTrip runs init, create (twice, the second after a change),
// list, restore and verify through the built binary against repo, with
// env giving its credentials, and checks both restores bit-exact.
func cliRoundTrip(t *testing.T, repo string, env []string) {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := demodisk.Create(img, 4<<20, 5, demodisk.MixedImage); err != nil {
		t.Fatal(err)
	}
	mustBinary(t, env, "init", "-repo", repo, "-format", "2")
	var want [][]byte
	for i := range 2 {
		if i == 1 {
			if _, err := demodisk.Scatter(img, 0.02, 9); err != nil {
				t.Fatal(err)
			}
		}
		data, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, data)
		mustBinary(t, env, "create", "-repo", repo, "-collection", "vm", "os="+img)
	}
	// The repository is also found through DISKPOINT_REPOSITORY.
	out := mustBinary(t, append(env, "DISKPOINT_REPOSITORY="+repo), "list", "-collection", "vm", "-json")
	var points []struct{ ID string }
	if err := json.Unmarshal([]byte(out), &points); err != nil || len(points) != 2 {
		t.Fatalf("list: %v, %s; want 2 restore points", err, out)
	}
	for i, p := range points {
		target := filepath.Join(dir, fmt.Sprintf("restored%d.img", i))
		mustBinary(t, env, "restore", "-repo", repo, "-collection", "vm", "-point", p.ID, "-disk", "os", "-to", target)
		got, err := os.ReadFile(target)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want[i]) {
			t.Fatalf("restore point %s restored from %s differs from the disk", p.ID, repo)
		}
	}
	if code, out, errOut := runBinary(t, env, "verify", "-repo", repo); code != 0 {
		t.Fatalf("verify -repo %s: exit %d: %s %s", repo, code, out, errOut)
	}
	// A second init of the same place is refused: it holds a repository.
	if code, _, _ := runBinary(t, env, "init", "-repo", repo); code == 0 {
		t.Fatalf("init -repo %s succeeded twice", repo)
	}
}

// The CLI's commands work on a repository in a real MinIO, named
// s3:http://HOST:PORT/BUCKET/PREFIX with the credentials in AWS_*.
func TestCLIRepoOnMinIO(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts a server and runs the CLI a dozen times (the full run has it)")
	}
	srv := objserver.StartMinIO(t)
	srv.MakeBucket(t, "backups")
	repo := srv.URL("backups", "hosts/one")
	cliRoundTrip(t, repo, append(noCredentials(t), srv.Env()...))

	// The objects are in the bucket, under the prefix.
	var keys []string
	for obj := range srv.Client(t).ListObjects(context.Background(), "backups", minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		keys = append(keys, obj.Key)
	}
	if !slices.Contains(keys, "hosts/one/config") || !allHavePrefix(keys, "hosts/one/") {
		t.Fatalf("bucket holds %v; want the repository under hosts/one/", keys)
	}
	checkCLICache(t, repo, srv.Env())

	// Wrong credentials: an error from the server, not a local repository.
	code, _, errOut := runBinary(t, append(noCredentials(t), "AWS_ACCESS_KEY_ID=nobody", "AWS_SECRET_ACCESS_KEY=wrong-secret"), "list", "-repo", repo, "-collection", "vm")
	if code == 0 || !strings.Contains(errOut, "Access Key") {
		t.Fatalf("list with wrong credentials: exit %d, %q", code, errOut)
	}
}

// The CLI's commands work on a repository in a real Azurite, named
// azure:CONTAINER:/PREFIX with AZURE_STORAGE_CONNECTION_STRING.
func TestCLIRepoOnAzurite(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts a server and runs the CLI a dozen times (the full run has it)")
	}
	srv := objserver.StartAzurite(t)
	srv.MakeContainer(t, "backups")
	repo := srv.URL("backups", "hosts/one")
	cliRoundTrip(t, repo, append(noCredentials(t), srv.Env()...))
	checkCLICache(t, repo, srv.Env())
}

func allHavePrefix(list []string, prefix string) bool {
	for _, v := range list {
		if !strings.HasPrefix(v, prefix) {
			return false
		}
	}
	return len(list) > 0
}

// checkCLICache checks the local cache of the remote repository at repo,
// which holds a restore point of disk os in collection vm: create and
// restore keep its index files and tree packs in $XDG_CACHE_HOME/diskpoint/ID
// (or -cache-dir's DIR/ID), -no-cache keeps nothing, and a damaged cache
// file is fetched again rather than trusted or reported as damage.
func checkCLICache(t *testing.T, repo string, env []string) {
	t.Helper()
	xdg := t.TempDir()
	env = append(append(noCredentials(t), env...), "XDG_CACHE_HOME="+xdg)
	target := filepath.Join(t.TempDir(), "restored.img")
	restore := func(extra ...string) []byte {
		t.Helper()
		mustBinary(t, env, append([]string{"restore", "-repo", repo, "-collection", "vm", "-point", "latest", "-disk", "os", "-to", target, "-force"}, extra...)...)
		data, err := os.ReadFile(target)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	want := restore("-no-cache")
	if _, err := os.Stat(filepath.Join(xdg, "diskpoint")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("-no-cache made a cache: %v", err)
	}
	if got := restore(); !bytes.Equal(got, want) {
		t.Fatal("a restore through the cache differs from one without")
	}
	ids, err := os.ReadDir(filepath.Join(xdg, "diskpoint"))
	if err != nil || len(ids) != 1 {
		t.Fatalf("the cache base holds %v, %v; want one repository's directory", ids, err)
	}
	objects := filepath.Join(xdg, "diskpoint", ids[0].Name(), "objects")
	var files []string
	filepath.Walk(objects, func(path string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			files = append(files, path)
		}
		return nil
	})
	var index, packs int
	for _, f := range files {
		switch {
		case strings.HasPrefix(f, filepath.Join(objects, "index")):
			index++
		case strings.HasPrefix(f, filepath.Join(objects, "packs")):
			packs++
		}
	}
	if index == 0 || packs == 0 {
		t.Fatalf("the cache holds %v; want index files and tree packs", files)
	}
	// Damage every cache file: the restore fetches them again.
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		data[len(data)-1] ^= 0xff
		if err := os.WriteFile(f, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if got := restore(); !bytes.Equal(got, want) {
		t.Fatal("a restore through a damaged cache differs")
	}
	// -cache-dir puts it elsewhere.
	dir := t.TempDir()
	restore("-cache-dir", dir)
	if _, err := os.Stat(filepath.Join(dir, ids[0].Name(), "objects", "index")); err != nil {
		t.Fatalf("-cache-dir %s: %v", dir, err)
	}
}

// copy's target may come from DISKPOINT_TO_REPOSITORY, as its source
// comes from DISKPOINT_REPOSITORY; -to-repo wins over it.
func TestCLIToRepositoryFromEnvironment(t *testing.T) {
	dir := t.TempDir()
	src, dst, img := filepath.Join(dir, "src"), filepath.Join(dir, "dst"), filepath.Join(dir, "a.img")
	if err := demodisk.Create(img, 1<<20, 1, demodisk.MixedImage); err != nil {
		t.Fatal(err)
	}
	mustBinary(t, nil, "init", "-repo", src)
	mustBinary(t, nil, "init", "-repo", "local:"+dst)
	mustBinary(t, nil, "create", "-repo", src, "-collection", "vm", "d="+img)
	code, _, errOut := runBinary(t, []string{"DISKPOINT_TO_REPOSITORY="}, "copy", "-repo", src, "-collection", "vm", "-all", "-to-collection", "vm")
	if code != exitUsage || !strings.Contains(errOut, "DISKPOINT_TO_REPOSITORY") {
		t.Fatalf("copy without a target: exit %d, %q; want a usage error naming DISKPOINT_TO_REPOSITORY", code, errOut)
	}
	env := []string{"DISKPOINT_REPOSITORY=" + src, "DISKPOINT_TO_REPOSITORY=" + dst}
	if out := mustBinary(t, env, "copy", "-collection", "vm", "-all", "-to-collection", "vm"); !strings.Contains(out, "copied") {
		t.Fatalf("copy to DISKPOINT_TO_REPOSITORY: %s", out)
	}
	if out := mustBinary(t, nil, "list", "-repo", dst, "-collection", "vm", "-json"); !strings.Contains(out, `"d"`) {
		t.Fatalf("the target lacks the copied point: %s", out)
	}
	// -to-repo wins: an unknown scheme there is refused even with the
	// variable set.
	if code, _, errOut := runBinary(t, env, "copy", "-collection", "vm", "-all", "-to-repo", "foo:bar", "-to-collection", "vm"); code != exitUsage || !strings.Contains(errOut, "foo:bar") {
		t.Fatalf("copy -to-repo foo:bar: exit %d, %q", code, errOut)
	}
}

// Every command that takes -repo, -to-repo or -vault opens it through
// chain/location, so its help says the flag takes a location (s3:,
// azure:), not only a directory.
func TestCLIHelpSaysRepoFlagsTakeLocations(t *testing.T) {
	for name := range commands {
		out := mustBinary(t, nil, "help", name)
		lines := strings.Split(out, "\n")
		for i, line := range lines {
			if !strings.HasPrefix(line, "  -") { // a flag's line, not the notes after them
				continue
			}
			flagName, _, _ := strings.Cut(strings.TrimSpace(line), " ")
			if flagName != "-repo" && flagName != "-to-repo" && flagName != "-vault" || i+1 == len(lines) {
				continue
			}
			if usage := lines[i+1]; !strings.Contains(usage, "s3:") && !strings.Contains(usage, "as -repo") {
				t.Errorf("diskpoint help %s: %s %q does not say it takes a location", name, flagName, strings.TrimSpace(usage))
			}
		}
	}
}
