package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/internal/demodisk"
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
	dst := copyDir(t, v1Fixture)
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

// An encrypted version 1 repository, through the built binary: migrate
// with the wrong key fails with the key's exit status and changes nothing;
// with its key it converts it to encrypted version 2, whose key ring holds
// that key. Afterwards the disk restores bit-exact, verify is clean, no
// pack keeps a plain header, a create stores only the change, and key add
// and key remove work.
func TestCLIMigrateEncrypted(t *testing.T) {
	dir := t.TempDir()
	repo, img := filepath.Join(dir, "repo"), filepath.Join(dir, "d.img")
	if err := demodisk.Create(img, 1<<20, 5, demodisk.MixedImage); err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(mustBinary(t, nil, "keygen"))
	byKey := []string{"DISKPOINT_KEY=" + key}
	mustBinary(t, byKey, "init", "-repo", repo, "-encrypt")
	mustBinary(t, byKey, "create", "-repo", repo, "-collection", "vm", "d="+img)
	if v := configVersion(t, repo); v != 1 {
		t.Fatalf("init -encrypt made version %d", v)
	}
	restores := func(env []string, when string) {
		t.Helper()
		to := filepath.Join(t.TempDir(), "out.img")
		mustBinary(t, env, "restore", "-repo", repo, "-collection", "vm", "-point", "latest", "-disk", "d", "-to", to)
		if !bytes.Equal(readAll(t, to), readAll(t, img)) {
			t.Fatalf("%s: the restored disk differs", when)
		}
	}

	before := dirListing(t, repo)
	wrong := []string{"DISKPOINT_KEY=" + strings.Repeat("ab", 32)}
	if code, _, errOut := runBinary(t, wrong, "migrate", "-repo", repo); code != exitKey || !strings.Contains(errOut, "wrong key") {
		t.Fatalf("migrate with the wrong key: exit %d: %s", code, errOut)
	}
	if after := dirListing(t, repo); after != before || configVersion(t, repo) != 1 {
		t.Fatalf("the refused migrate changed the repository:\nbefore %s\nafter  %s", before, after)
	}

	var report struct {
		Converted      bool `json:"converted"`
		V1Packs        int  `json:"v1_packs_converted"`
		V1PacksDeleted int  `json:"v1_packs_deleted"`
	}
	if err := json.Unmarshal([]byte(mustBinary(t, byKey, "migrate", "-repo", repo, "-json")), &report); err != nil {
		t.Fatal(err)
	}
	if !report.Converted || report.V1Packs == 0 || report.V1PacksDeleted != report.V1Packs {
		t.Fatalf("migrate -json: %+v", report)
	}
	var cfg struct {
		Version    int    `json:"version"`
		Encryption string `json:"encryption"`
		MAC        string `json:"mac"`
	}
	if err := json.Unmarshal(readAll(t, filepath.Join(repo, "config")), &cfg); err != nil || cfg.Version != 2 || cfg.Encryption != "xchacha20-poly1305" || cfg.MAC == "" {
		t.Fatalf("config after migrate: %+v, %v", cfg, err)
	}
	packs, _ := filepath.Glob(filepath.Join(repo, "packs", "*", "*"))
	for _, p := range packs {
		if data := readAll(t, p); !bytes.HasSuffix(data, []byte("dpk2")) {
			t.Fatalf("pack %s has no sealed header after migrate", p)
		}
	}
	if counts := indexMagics(t, repo); counts["dps2"] == 0 || len(counts) != 1 {
		t.Fatalf("index files after migrate: %v, want sealed files only", counts)
	}
	restores(byKey, "migrated")
	mustBinary(t, byKey, "verify", "-repo", repo)
	if out := mustBinary(t, byKey, "migrate", "-repo", repo); !strings.Contains(out, "nothing to do") {
		t.Fatalf("a second migrate said: %q", out)
	}

	if _, err := demodisk.Scatter(img, 0.02, 9); err != nil {
		t.Fatal(err)
	}
	var rp struct {
		Disks []struct {
			NewChunkBytes int64 `json:"new_chunk_bytes"`
		} `json:"disks"`
	}
	if err := json.Unmarshal([]byte(mustBinary(t, byKey, "create", "-repo", repo, "-collection", "vm", "-json", "d="+img)), &rp); err != nil || len(rp.Disks) != 1 {
		t.Fatalf("create after migrate: %v", err)
	}
	if n := rp.Disks[0].NewChunkBytes; n == 0 || n > 1<<20/4 {
		t.Errorf("a create after a 2%% change stored %d bytes of new chunks: it did not deduplicate against the migrated ones", n)
	}
	restores(byKey, "after a create")

	keys := listKeys(t, byKey, repo)
	if len(keys) != 1 || keys[0].KDF != "none" || !keys[0].InUse {
		t.Fatalf("keys after migrate: %+v", keys)
	}
	mustBinary(t, append(byKey, "DISKPOINT_NEW_PASSWORD=after migrate"), "key", "add", "-repo", repo)
	byPassword := []string{"DISKPOINT_PASSWORD=after migrate"}
	mustBinary(t, byPassword, "key", "remove", "-repo", repo, "-id", keys[0].ID)
	restores(byPassword, "opened by the password")
	if code, _, _ := runBinary(t, byKey, "list", "-repo", repo, "-collection", "vm"); code != exitKey {
		t.Fatalf("the removed key still opens the repository (exit %d)", code)
	}
}

// dirListing lists every file under dir with its size, for comparing a
// repository before and after.
func dirListing(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			info, _ := d.Info()
			fmt.Fprintf(&b, "%s %d\n", path, info.Size())
		}
		return err
	})
	return b.String()
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
