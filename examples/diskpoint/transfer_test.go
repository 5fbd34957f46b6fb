package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/internal/objserver"
)

// transferJSON is what transfer -json prints.
type transferJSON struct {
	Transferred []struct {
		Collection string `json:"collection"`
		ID         string `json:"id"`
		Blobs      int64  `json:"blobs_copied"`
	} `json:"transferred"`
	AlreadyInVault int `json:"already_in_vault"`
	Pruned         []struct {
		ID string `json:"id"`
	} `json:"pruned"`
	GCDue bool            `json:"gc_due"`
	GC    json.RawMessage `json:"gc"`
}

// listIDs lists the IDs of collection vm in repo, oldest first, through the
// built binary.
func listIDs(t *testing.T, repo string) []string {
	t.Helper()
	var points []jsonPoint
	if err := json.Unmarshal([]byte(mustBinary(t, nil, "list", "-repo", repo, "-collection", "vm", "-json")), &points); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range points {
		ids = append(ids, p.ID)
	}
	return ids
}

// transfer copies what the vault lacks, draws its progress on a terminal,
// prunes the local tier to -keep-local, and restore -vault reads a pruned
// point from the vault and a local one from the local tier alone (it works
// with the vault gone). A transfer that fails prunes nothing.
func TestCLITransferThenRestoreFromEitherTier(t *testing.T) {
	dir := t.TempDir()
	local, vault, img := filepath.Join(dir, "local"), filepath.Join(dir, "vault"), filepath.Join(dir, "d.img")
	mustBinary(t, nil, "init", "-repo", local)
	mustBinary(t, nil, "init", "-repo", vault)
	demodisk.Create(img, 2<<20, 61, demodisk.MixedImage)
	images := map[string][]byte{}
	var ids []string
	for i := range 3 {
		if i > 0 {
			demodisk.Scatter(img, 0.05, uint64(62+i))
		}
		var rp jsonPoint
		json.Unmarshal([]byte(mustBinary(t, nil, "create", "-repo", local, "-collection", "vm", "-json", "d="+img)), &rp)
		ids = append(ids, rp.ID)
		images[rp.ID] = readAll(t, img)
	}

	code, drawn, out := runOnTerminal(t, false, "transfer", "-repo", local, "-to-repo", vault, "-keep-local", "1")
	if code != 0 {
		t.Fatalf("transfer: exit %d: %s", code, drawn)
	}
	if !strings.Contains(drawn, "transfer vm/"+ids[0]+" (1 of 3)") || !strings.Contains(drawn, "transfer vm/"+ids[2]+" (3 of 3)") {
		t.Errorf("transfer drew no progress naming the points: %q", drawn)
	}
	if !strings.Contains(out, "3 restore points transferred, 0 restore points in the vault already; 2 restore points pruned from the local tier (run gc") {
		t.Fatalf("transfer -keep-local 1 said %q", out)
	}
	if got := listIDs(t, local); !slices.Equal(got, ids[2:]) {
		t.Fatalf("the local tier keeps %v, want %v", got, ids[2:])
	}
	if got := listIDs(t, vault); !slices.Equal(got, ids) {
		t.Fatalf("the vault holds %v, want %v", got, ids)
	}
	var again transferJSON
	if err := json.Unmarshal([]byte(mustBinary(t, nil, "transfer", "-repo", local, "-to-repo", vault, "-keep-local", "1", "-gc", "-json")), &again); err != nil {
		t.Fatal(err)
	}
	if len(again.Transferred) != 0 || again.AlreadyInVault != 1 || len(again.Pruned) != 0 || again.GCDue {
		t.Errorf("a second transfer: %+v; want nothing to do", again)
	}

	restore := func(point string) string {
		t.Helper()
		to := filepath.Join(t.TempDir(), "d.img")
		out := mustBinary(t, nil, "restore", "-repo", local, "-vault", vault, "-collection", "vm", "-point", point, "-disk", "d", "-to", to)
		if !bytes.Equal(readAll(t, to), images[point]) {
			t.Fatalf("restore -vault of %s restores something else", point)
		}
		return out
	}
	if out := restore(ids[0]); !strings.HasPrefix(out, "from the vault tier: restored disk d") {
		t.Errorf("the restore of a pruned point said %q", out)
	}
	if out := restore(ids[2]); !strings.HasPrefix(out, "from the local tier: restored disk d") {
		t.Errorf("the restore of a local point said %q", out)
	}
	// With the vault gone, a local point still restores: the vault is
	// opened only for a point the local tier lacks.
	if err := os.Rename(vault, vault+".away"); err != nil {
		t.Fatal(err)
	}
	restore(ids[2])
	code, _, errOut := runBinary(t, nil, "restore", "-repo", local, "-vault", vault, "-collection", "vm", "-point", ids[0], "-disk", "d", "-to", filepath.Join(dir, "x.img"))
	if code != exitNoRepository || !strings.Contains(errOut, "vault") {
		t.Fatalf("restore -vault of a pruned point with the vault gone: exit %d: %s", code, errOut)
	}
	if err := os.Rename(vault+".away", vault); err != nil {
		t.Fatal(err)
	}

	// A transfer that fails (a damaged local chunk) prunes nothing, even
	// with -keep-local 0: the local tier keeps what the vault lacks.
	demodisk.Scatter(img, 0.5, 70)
	var rp jsonPoint
	json.Unmarshal([]byte(mustBinary(t, nil, "create", "-repo", local, "-collection", "vm", "-json", "d="+img)), &rp)
	newest := newestPack(t, local) // of the new point's chunks or block map: no other point needs it
	damaged := readAll(t, newest)
	damaged[len(damaged)/3] ^= 0x5a
	if err := os.WriteFile(newest, damaged, 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = runBinary(t, nil, "transfer", "-repo", local, "-to-repo", vault, "-keep-local", "0")
	if code == 0 {
		t.Fatal("a transfer of a damaged point succeeded")
	}
	if got := listIDs(t, local); !slices.Equal(got, []string{ids[2], rp.ID}) {
		t.Fatalf("a failed transfer left the local tier with %v, want %v (%s)", got, []string{ids[2], rp.ID}, errOut)
	}
	if got := listIDs(t, vault); slices.Contains(got, rp.ID) {
		t.Fatalf("the vault lists the damaged point: %v", got)
	}
	mustBinary(t, nil, "verify", "-repo", vault)
}

// A transfer killed with SIGKILL after its first checkpoint finishes on
// the rerun, which moves only the rest, and then prunes the local tier:
// the point restores from the vault. DISKPOINT_TEST_FORMAT picks the
// kind of repositories (testRepoFormat).
func TestCLITransferKilledHalfwayFinishesOnRerun(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: a 48 MiB transfer killed and run again (the copy kill test covers the same path there)")
	}
	dir := t.TempDir()
	local, vault, img := filepath.Join(dir, "local"), filepath.Join(dir, "vault"), filepath.Join(dir, "d.img")
	demodisk.Create(img, 48<<20, 19, demodisk.Mix{Random: 1}) // incompressible: the transfer takes a while
	initTestRepo(t, local, testRepoFormat(t))                 // its seeded points, if any, are transferred too
	initTestRepo(t, vault, testRepoFormat(t))
	var rp jsonPoint
	json.Unmarshal([]byte(mustBinary(t, nil, "create", "-repo", local, "-collection", "vm", "-json", "d="+img)), &rp)
	args := []string{"transfer", "-repo", local, "-to-repo", vault, "-collection", "vm", "-checkpoint", "4MiB", "-keep-local", "0", "-json"}

	killAtFirstCheckpoint(t, vault, args...)
	if got := listIDs(t, local); !slices.Equal(got, []string{rp.ID}) {
		t.Fatalf("the killed transfer pruned the local tier: %v", got)
	}

	var resumed transferJSON
	if err := json.Unmarshal([]byte(mustBinary(t, nil, args...)), &resumed); err != nil {
		t.Fatal(err)
	}
	full := int64(48<<20) / (64 << 10) // chunks of the disk, before block-map nodes
	if len(resumed.Transferred) != 1 || resumed.Transferred[0].Blobs >= full || len(resumed.Pruned) != 1 {
		t.Fatalf("the rerun moved %+v; the whole disk has %d chunks: it did not resume, or did not prune", resumed, full)
	}
	out := filepath.Join(dir, "restored.img")
	mustBinary(t, nil, "restore", "-repo", local, "-vault", vault, "-collection", "vm", "-point", rp.ID, "-disk", "d", "-to", out)
	if !bytes.Equal(readAll(t, out), readAll(t, img)) {
		t.Fatal("the resumed transfer restores something else")
	}
	mustBinary(t, nil, "verify", "-repo", vault)
	t.Logf("killed after the first checkpoint; the rerun moved %d of %d chunks", resumed.Transferred[0].Blobs, full)
}

// newestPack is the pack of the repository at dir written last (the
// largest of those written at the same instant).
func newestPack(t *testing.T, dir string) string {
	t.Helper()
	packs, _ := filepath.Glob(filepath.Join(dir, "packs", "*", "*"))
	var newest string
	var newestInfo os.FileInfo
	for _, p := range packs {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if newestInfo == nil || fi.ModTime().After(newestInfo.ModTime()) || fi.ModTime().Equal(newestInfo.ModTime()) && fi.Size() > newestInfo.Size() {
			newest, newestInfo = p, fi
		}
	}
	if newest == "" {
		t.Fatalf("no packs in %s", dir)
	}
	return newest
}

// transfer and restore -vault take a vault in an S3 bucket, as every
// -repo does: here a real MinIO the test starts.
func TestCLITransferToMinIO(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: starts a MinIO")
	}
	m := objserver.StartMinIO(t)
	m.MakeBucket(t, "vaults")
	env, vault := m.Env(), m.URL("vaults", "host-1")
	dir := t.TempDir()
	local, img := filepath.Join(dir, "local"), filepath.Join(dir, "d.img")
	mustBinary(t, nil, "init", "-repo", local)
	mustBinary(t, env, "init", "-repo", vault)
	demodisk.Create(img, 2<<20, 71, demodisk.MixedImage)
	first := readAll(t, img)
	var ids []string
	for i := range 2 {
		if i > 0 {
			demodisk.Scatter(img, 0.05, 72)
		}
		var rp jsonPoint
		json.Unmarshal([]byte(mustBinary(t, nil, "create", "-repo", local, "-collection", "vm", "-json", "d="+img)), &rp)
		ids = append(ids, rp.ID)
	}
	mustBinary(t, env, "transfer", "-repo", local, "-to-repo", vault, "-keep-local", "1", "-gc")
	if got := listIDs(t, local); !slices.Equal(got, ids[1:]) {
		t.Fatalf("the local tier keeps %v, want %v", got, ids[1:])
	}
	to := filepath.Join(dir, "restored.img")
	out := mustBinary(t, env, "restore", "-repo", local, "-vault", vault, "-collection", "vm", "-point", ids[0], "-disk", "d", "-to", to)
	if !strings.HasPrefix(out, "from the vault tier") || !bytes.Equal(readAll(t, to), first) {
		t.Fatalf("restore -vault %s of the pruned point: %q, or other bytes", vault, out)
	}
	mustBinary(t, env, "verify", "-repo", vault)
}
