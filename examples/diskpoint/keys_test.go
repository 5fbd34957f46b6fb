package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/internal/demodisk"
)

func TestCLIEncryptedRepository(t *testing.T) {
	dir := t.TempDir()
	repo, img := filepath.Join(dir, "repo"), filepath.Join(dir, "d.img")
	demodisk.Create(img, 2<<20, 4, demodisk.MixedImage)
	key := strings.TrimSpace(mustCLI(t, "keygen"))
	if len(key) != 64 {
		t.Fatalf("keygen printed %q", key)
	}
	if code, _, errOut := cli(t, "init", "-repo", repo, "-encrypt"); code != 2 || !strings.Contains(errOut, "DISKPOINT_KEY") {
		t.Fatalf("init -encrypt without a key: exit %d: %s", code, errOut)
	}
	keyFile := filepath.Join(dir, "key")
	os.WriteFile(keyFile, []byte(key+"\n"), 0o600)
	t.Setenv("DISKPOINT_KEY_FILE", keyFile)
	if out := mustCLI(t, "init", "-repo", repo, "-encrypt"); !strings.Contains(out, "encrypted") {
		t.Errorf("init: %s", out)
	}
	mustCLI(t, "create", "-repo", repo, "-collection", "vm", "d="+img)
	out := filepath.Join(dir, "out.img")
	mustCLI(t, "restore", "-repo", repo, "-collection", "vm", "-point", "latest", "-disk", "d", "-to", out)
	if !bytes.Equal(readAll(t, out), readAll(t, img)) {
		t.Fatal("restore from the encrypted repository differs")
	}
	mustCLI(t, "verify", "-repo", repo)

	t.Setenv("DISKPOINT_KEY_FILE", "")
	if code, _, errOut := cli(t, "list", "-repo", repo, "-collection", "vm"); code != 12 || !strings.Contains(errOut, "key is required") || !strings.Contains(errOut, "DISKPOINT_KEY") {
		t.Errorf("without a key: exit %d: %s", code, errOut)
	}
	other := strings.TrimSpace(mustCLI(t, "keygen"))
	t.Setenv("DISKPOINT_KEY", other)
	if code, _, errOut := cli(t, "list", "-repo", repo, "-collection", "vm"); code != 12 || !strings.Contains(errOut, "wrong key") {
		t.Errorf("with another key: exit %d: %s", code, errOut)
	}
	t.Setenv("DISKPOINT_KEY", "not-hex")
	if code, _, errOut := cli(t, "list", "-repo", repo, "-collection", "vm"); code != 12 || !strings.Contains(errOut, "64 hex digits") {
		t.Errorf("with a malformed key: exit %d: %s", code, errOut)
	}
}
