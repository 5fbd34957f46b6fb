package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/internal/demodisk"
)

type listedKey struct {
	ID    string `json:"id"`
	KDF   string `json:"kdf"`
	Host  string `json:"host"`
	Label string `json:"label"`
	InUse bool   `json:"in_use"`
}

func listKeys(t *testing.T, env []string, repo string) []listedKey {
	t.Helper()
	var keys []listedKey
	out := mustBinary(t, env, "key", "list", "-repo", repo, "-json")
	if err := json.Unmarshal([]byte(out), &keys); err != nil {
		t.Fatalf("key list -json printed %q: %v", out, err)
	}
	return keys
}

// An encrypted format 2 repository through the CLI: made with a key,
// given a password, its key removed, the password changed; each credential
// opens it while it is in the ring and not after, and the disk restores
// exactly throughout.
func TestCLIKeyRing(t *testing.T) {
	dir := t.TempDir()
	repo, img := filepath.Join(dir, "repo"), filepath.Join(dir, "d.img")
	if err := demodisk.Create(img, 1<<20, 3, demodisk.MixedImage); err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(mustBinary(t, nil, "keygen"))
	byKey := []string{"DISKPOINT_KEY=" + key}
	out := mustBinary(t, byKey, "init", "-repo", repo, "-format", "2", "-encrypt")
	if !strings.Contains(out, "format 2") || !strings.Contains(out, "key ring") {
		t.Errorf("init said %q", out)
	}
	mustBinary(t, byKey, "create", "-repo", repo, "-collection", "vm", "d="+img)
	restores := func(env []string) {
		t.Helper()
		to := filepath.Join(t.TempDir(), "out.img")
		mustBinary(t, env, "restore", "-repo", repo, "-collection", "vm", "-point", "latest", "-disk", "d", "-to", to)
		want, _ := os.ReadFile(img)
		if got, _ := os.ReadFile(to); !bytes.Equal(got, want) {
			t.Fatal("the restored disk differs")
		}
	}
	refused := func(what string, env []string) {
		t.Helper()
		if code, _, errOut := runBinary(t, env, "list", "-repo", repo, "-collection", "vm"); code != 12 {
			t.Errorf("%s: list exit %d (%s), want 12", what, code, errOut)
		}
	}
	keys := listKeys(t, byKey, repo)
	if len(keys) != 1 || keys[0].KDF != "none" || !keys[0].InUse {
		t.Fatalf("keys after init: %+v", keys)
	}
	keyID := keys[0].ID

	// A password is added; it opens the repository, and key list says it
	// is the one in use.
	out = mustBinary(t, append(byKey, "DISKPOINT_NEW_PASSWORD=first password"), "key", "add", "-repo", repo, "-label", "operators")
	if !strings.Contains(out, "added key") {
		t.Errorf("key add said %q", out)
	}
	byPassword := []string{"DISKPOINT_PASSWORD=first password"}
	keys = listKeys(t, byPassword, repo)
	if len(keys) != 2 || keys[1].KDF != "argon2id" || keys[1].Label != "operators" || !keys[1].InUse || keys[0].InUse {
		t.Fatalf("keys after key add: %+v", keys)
	}
	restores(byPassword)

	// The key in use cannot be removed; the original key can, from the
	// password, and then no longer opens the repository.
	if code, _, errOut := runBinary(t, byPassword, "key", "remove", "-repo", repo, "-id", keys[1].ID); code == 0 || !strings.Contains(errOut, "in use") {
		t.Errorf("key remove of the key in use: exit %d, %q", code, errOut)
	}
	mustBinary(t, byPassword, "key", "remove", "-repo", repo, "-id", keyID)
	refused("the removed key", byKey)

	// passwd, the new password from a file (its final newline is not part
	// of it): the old password no longer opens it, the new one does.
	pwFile := filepath.Join(dir, "pw")
	os.WriteFile(pwFile, []byte("second password\n"), 0o600)
	out = mustBinary(t, append(byPassword, "DISKPOINT_NEW_PASSWORD_FILE="+pwFile), "key", "passwd", "-repo", repo)
	if !strings.Contains(out, "replaced key "+keys[1].ID) {
		t.Errorf("key passwd said %q", out)
	}
	refused("the old password", byPassword)
	byNew := []string{"DISKPOINT_PASSWORD_FILE=" + pwFile}
	if keys = listKeys(t, byNew, repo); len(keys) != 1 || !keys[0].InUse || keys[0].KDF != "argon2id" {
		t.Fatalf("keys after passwd: %+v", keys)
	}
	restores(byNew)
	mustBinary(t, byNew, "verify", "-repo", repo)

	// No credential: the error names both ways to give one.
	code, _, errOut := runBinary(t, nil, "list", "-repo", repo, "-collection", "vm")
	if code != 12 || !strings.Contains(errOut, "DISKPOINT_KEY") || !strings.Contains(errOut, "DISKPOINT_PASSWORD") {
		t.Errorf("no credential: exit %d, %q", code, errOut)
	}
	// Both at once is refused, not guessed between.
	if code, _, errOut := runBinary(t, append(byNew, "DISKPOINT_KEY="+key), "list", "-repo", repo, "-collection", "vm"); code != 12 || !strings.Contains(errOut, "give one") {
		t.Errorf("key and password both set: exit %d, %q", code, errOut)
	}
}

// init -encrypt takes a password only for format 2, and the key commands
// refuse a repository without a key ring.
func TestCLIKeyRingRefusals(t *testing.T) {
	dir := t.TempDir()
	pw := []string{"DISKPOINT_PASSWORD=pw"}
	if code, _, errOut := runBinary(t, pw, "init", "-repo", filepath.Join(dir, "r1"), "-encrypt"); code != 2 || !strings.Contains(errOut, "-format 2") {
		t.Errorf("init -encrypt with a password, format 1: exit %d, %q", code, errOut)
	}
	key := strings.TrimSpace(mustBinary(t, nil, "keygen"))
	v1 := filepath.Join(dir, "v1")
	mustBinary(t, []string{"DISKPOINT_KEY=" + key}, "init", "-repo", v1, "-encrypt")
	if code, _, errOut := runBinary(t, []string{"DISKPOINT_KEY=" + key}, "key", "list", "-repo", v1); code != 1 || !strings.Contains(errOut, "no key ring") {
		t.Errorf("key list of a format 1 repository: exit %d, %q", code, errOut)
	}
	if code, _, errOut := runBinary(t, nil, "key", "frobnicate", "-repo", v1); code != 2 {
		t.Errorf("key frobnicate: exit %d, %q", code, errOut)
	}
	if code, _, errOut := runBinary(t, nil, "key", "list", "-repo", v1, "-id", "x"); code != 2 || !strings.Contains(errOut, "-id") {
		t.Errorf("key list -id: exit %d, %q", code, errOut)
	}
}

// copy reads a format 2 source's password from DISKPOINT_FROM_PASSWORD
// while the target opens with its own key.
func TestCLIKeyRingCopy(t *testing.T) {
	dir := t.TempDir()
	src, dst, img := filepath.Join(dir, "src"), filepath.Join(dir, "dst"), filepath.Join(dir, "d.img")
	if err := demodisk.Create(img, 1<<20, 4, demodisk.MixedImage); err != nil {
		t.Fatal(err)
	}
	bySrc := []string{"DISKPOINT_PASSWORD=source password"}
	mustBinary(t, bySrc, "init", "-repo", src, "-format", "2", "-encrypt")
	mustBinary(t, bySrc, "create", "-repo", src, "-collection", "vm", "d="+img)
	key := strings.TrimSpace(mustBinary(t, nil, "keygen"))
	byDst := []string{"DISKPOINT_KEY=" + key}
	mustBinary(t, byDst, "init", "-repo", dst, "-format", "2", "-encrypt")
	mustBinary(t, append(byDst, "DISKPOINT_FROM_PASSWORD=source password"), "copy", "-repo", src, "-collection", "vm", "-point", "latest",
		"-to-repo", dst, "-to-collection", "vm")
	to := filepath.Join(dir, "out.img")
	mustBinary(t, byDst, "restore", "-repo", dst, "-collection", "vm", "-point", "latest", "-disk", "d", "-to", to)
	want, _ := os.ReadFile(img)
	if got, _ := os.ReadFile(to); !bytes.Equal(got, want) {
		t.Fatal("the copied disk differs")
	}
}
