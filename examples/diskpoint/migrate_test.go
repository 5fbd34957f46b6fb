package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The version 1 repository the snapshot package's migration tests start
// from, and what its disks restore to.
const (
	v1Fixture         = "../../snapshot/testdata/v1repo"
	v1FixtureExpected = "../../snapshot/testdata/v1repo.json"
)

type fixtureDisk struct {
	Collection, Point, Disk, SHA256 string
}

// copyFixture copies the version 1 fixture to a new directory: reading a
// repository writes lock objects, and the fixture must stay as it is.
func copyFixture(t *testing.T) (string, []fixtureDisk) {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "v1repo")
	err := filepath.WalkDir(v1Fixture, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(v1Fixture, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	var disks []fixtureDisk
	if err := json.Unmarshal(readAll(t, v1FixtureExpected), &disks); err != nil || len(disks) == 0 {
		t.Fatalf("the fixture's expectations: %v (%d disks)", err, len(disks))
	}
	return dst, disks
}

// cliRestoresAll restores every disk through the built binary and compares
// each with its SHA-256.
func cliRestoresAll(t *testing.T, repo string, disks []fixtureDisk, when string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "restored.img")
	for _, d := range disks {
		mustBinary(t, nil, "restore", "-repo", repo, "-collection", d.Collection, "-point", d.Point, "-disk", d.Disk, "-to", out, "-force")
		sum := sha256.Sum256(readAll(t, out))
		if hex.EncodeToString(sum[:]) != d.SHA256 {
			t.Fatalf("%s: %s/%s disk %s does not restore to what it was", when, d.Collection, d.Point, d.Disk)
		}
	}
}

// indexMagics counts a repository directory's index files by magic.
func indexMagics(t *testing.T, repo string) map[string]int {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(repo, "index", "[0-9a-f]*"))
	counts := map[string]int{}
	for _, name := range names {
		data := readAll(t, name)
		counts[string(data[:min(4, len(data))])]++
	}
	return counts
}

// configVersion is the version a repository directory's config says.
func configVersion(t *testing.T, repo string) int {
	t.Helper()
	var cfg struct{ Version int }
	if err := json.Unmarshal(readAll(t, filepath.Join(repo, "config")), &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg.Version
}

// diskpoint migrate, through the built binary: the version 1 fixture
// lists, restores and verifies before; migrate says what it did; after it
// the repository is version 2, restores and verifies (full and structure
// only); a second migrate says there was nothing to do.
func TestCLIMigrate(t *testing.T) {
	repo, disks := copyFixture(t)
	mustBinary(t, nil, "list", "-repo", repo, "-collection", disks[0].Collection)
	cliRestoresAll(t, repo, disks, "version 1")
	mustBinary(t, nil, "verify", "-repo", repo)

	out := mustBinary(t, nil, "migrate", "-repo", repo)
	if !strings.Contains(out, "migrated to format version 2") || !strings.Contains(out, "3 version 1 index files deleted") {
		t.Fatalf("migrate said: %q", out)
	}
	if v := configVersion(t, repo); v != 2 {
		t.Fatalf("config says version %d after migrate", v)
	}
	if counts := indexMagics(t, repo); counts["dpi1"] != 0 || counts["dpi2"] == 0 {
		t.Fatalf("index files after migrate: %v", counts)
	}
	for _, c := range []string{"vm1", "vm2"} {
		var points []jsonPoint
		if err := json.Unmarshal([]byte(mustBinary(t, nil, "list", "-repo", repo, "-collection", c, "-json")), &points); err != nil || len(points) == 0 {
			t.Fatalf("list %s after migrate: %v, %d points", c, err, len(points))
		}
	}
	cliRestoresAll(t, repo, disks, "migrated")
	mustBinary(t, nil, "verify", "-repo", repo)
	mustBinary(t, nil, "verify", "-repo", repo, "-structure-only")

	var again struct {
		NothingToDo bool `json:"nothing_to_do"`
		FromVersion int  `json:"from_version"`
	}
	if err := json.Unmarshal([]byte(mustBinary(t, nil, "migrate", "-repo", repo, "-json")), &again); err != nil {
		t.Fatal(err)
	}
	if !again.NothingToDo || again.FromVersion != 2 {
		t.Fatalf("a second migrate -json: %+v", again)
	}
	if out := mustBinary(t, nil, "migrate", "-repo", repo); !strings.Contains(out, "nothing to do") {
		t.Fatalf("a second migrate said: %q", out)
	}
}

// An encrypted repository is refused with a message that says why, and
// stays version 1.
func TestCLIMigrateRefusesEncrypted(t *testing.T) {
	repo := filepath.Join(t.TempDir(), "repo")
	key := []string{"DISKPOINT_KEY=" + strings.TrimSpace(mustBinary(t, nil, "keygen"))}
	mustBinary(t, key, "init", "-repo", repo, "-encrypt")
	code, _, errOut := runBinary(t, key, "migrate", "-repo", repo)
	if code != exitFailure || !strings.Contains(errOut, "encrypted") {
		t.Fatalf("migrate of an encrypted repository: exit %d: %s", code, errOut)
	}
	if v := configVersion(t, repo); v != 1 {
		t.Fatalf("the refused migrate left version %d", v)
	}
}

// migrate draws its progress on stderr when it is a terminal, as gc does,
// and not with -q.
func TestCLIMigrateProgress(t *testing.T) {
	repo, _ := copyFixture(t)
	if drawn := mustOnTerminal(t, "migrate", "-repo", repo, "-q"); strings.Contains(drawn, "migrate: ") {
		t.Errorf("migrate -q drew %q", drawn)
	}
	if v := configVersion(t, repo); v != 2 {
		t.Fatalf("migrate -q left version %d", v)
	}
	repo, _ = copyFixture(t)
	if drawn := mustOnTerminal(t, "migrate", "-repo", repo); !strings.Contains(drawn, "migrate: read") {
		t.Errorf("migrate with stderr a terminal drew %q; want its progress", drawn)
	}
}
