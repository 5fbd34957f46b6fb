package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

// migrateStepDelayEnv, set in a child's environment, makes each step of
// its migration take that long (see migrateStepHook), so that kills at
// random instants land in every phase of a migration of a small
// repository.
const migrateStepDelayEnv = "DISKPOINT_TEST_MIGRATE_STEP_DELAY"

func init() {
	if d, err := time.ParseDuration(os.Getenv(migrateStepDelayEnv)); err == nil {
		migrateStepHook = func(snapshot.MigrateProgress) { time.Sleep(d) }
	}
}

// killRepo is a version 1 repository of many restore points (so many
// index files), made in-process, and what each disk of each point was.
func killRepo(t *testing.T, points int) (string, []fixtureDisk) {
	t.Helper()
	return killRepoWithKey(t, points, nil)
}

// killRepoWithKey is killRepo, encrypted with key when it is not nil.
func killRepoWithKey(t *testing.T, points int, key []byte) (string, []fixtureDisk) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	repo, err := snapshot.Init(ctx, repoDir, snapshot.InitOptions{BlockSize: 16 << 10, Format: 1, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	images := map[string]string{}
	for i, name := range []string{"a", "b"} {
		images[name] = filepath.Join(dir, name+".img")
		if err := demodisk.Create(images[name], 256<<10, uint64(i+11), demodisk.MixedImage); err != nil {
			t.Fatal(err)
		}
	}
	vm, _ := repo.Collection("vm")
	var disks []fixtureDisk
	for i := range points {
		for _, name := range []string{"a", "b"} {
			if _, err := demodisk.Scatter(images[name], 0.05, uint64(i)); err != nil {
				t.Fatal(err)
			}
		}
		rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "a", Path: images["a"]}, {Name: "b", Path: images["b"]}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"a", "b"} {
			sum := sha256.Sum256(readAll(t, images[name]))
			disks = append(disks, fixtureDisk{Collection: "vm", Point: rp.ID, Disk: name, SHA256: hex.EncodeToString(sum[:])})
		}
	}
	return repoDir, disks
}

// copyDir copies the repository in src to a new directory.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "repo")
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	return dst
}

// checkKilledMigrate checks a repository a killed migrate left: it opens
// as the version its config says, has that version's index files (version
// 1: all of them; version 2: some), and every point restores bit-exact.
// It returns what the kill left, for the log.
func checkKilledMigrate(t *testing.T, repo string, disks []fixtureDisk, v1Files int, when string) string {
	t.Helper()
	r, err := snapshot.Open(context.Background(), repo)
	if err != nil {
		t.Fatalf("%s: open: %v", when, err)
	}
	defer r.Close()
	version := r.Config().Version
	counts := indexMagics(t, repo)
	switch {
	case version != configVersion(t, repo):
		t.Fatalf("%s: opens as version %d, config says %d", when, version, configVersion(t, repo))
	case version == 1 && counts["dpi1"] != v1Files:
		t.Fatalf("%s: version 1 with index files %v, want all %d version 1 files", when, counts, v1Files)
	case version == 2 && counts["dpi2"] == 0:
		t.Fatalf("%s: version 2 with no version 2 index file: %v", when, counts)
	}
	restoresInProcess(t, r, disks, when)
	switch {
	case version == 1 && counts["dpi2"] == 0:
		return "version 1, untouched"
	case version == 1:
		return "version 1, version 2 files written"
	case counts["dpi1"] > 0:
		return "version 2, version 1 files left"
	}
	return "version 2, done"
}

// restoresInProcess restores every disk from r and compares each with its
// SHA-256 (in this process: the kill test checks often).
func restoresInProcess(t *testing.T, r *snapshot.Repository, disks []fixtureDisk, when string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "restored.img")
	for _, d := range disks {
		c, _ := r.Collection(d.Collection)
		if _, err := c.RestoreDisk(context.Background(), snapshot.RestoreOptions{Point: d.Point, Disk: d.Disk, Path: out, Overwrite: true}); err != nil {
			t.Fatalf("%s: restore %s disk %s: %v", when, d.Point, d.Disk, err)
		}
		sum := sha256.Sum256(readAll(t, out))
		if hex.EncodeToString(sum[:]) != d.SHA256 {
			t.Fatalf("%s: %s disk %s does not restore to what it was", when, d.Point, d.Disk)
		}
	}
}

// diskpoint migrate killed with SIGKILL at random instants, again and
// again on the same repository until a run finishes: after every kill the
// repository is whole as the version its config says, and restores every
// point bit-exact; the run that finishes leaves version 2 with no version 1
// index file, which verifies clean (full and structure only). Each step of
// the child's migration is slowed to 20 ms (migrateStepDelayEnv) so that
// the kills land in every phase; -kills sets how many (this test takes
// a tenth of them: 10 by default, 3 with -short).
func TestMigrateKilledAtRandomInstants(t *testing.T) {
	kills := max(*killCount/10, 3)
	if testing.Short() {
		kills = 3
	}
	const points = 12
	base, disks := killRepo(t, points)
	v1Files := indexMagics(t, base)["dpi1"]
	if v1Files != points {
		t.Fatalf("the repository has %d version 1 index files, want %d", v1Files, points)
	}
	delay := []string{migrateStepDelayEnv + "=20ms"}

	// Calibrate: how long an unkilled migrate takes.
	start := time.Now()
	mustBinary(t, delay, "migrate", "-repo", copyDir(t, base))
	budget := time.Since(start)

	rng := rand.New(rand.NewPCG(*killSeed, 12))
	left := map[string]int{}
	killed, finished := 0, 0
	for killed < kills {
		repo := copyDir(t, base)
		run := 1
		for ; ; run++ {
			if !migrateKilledAtRandom(t, delay, repo, rng, budget) {
				finished++
				break
			}
			killed++
			left[checkKilledMigrate(t, repo, disks, v1Files, fmt.Sprintf("kill %d (run %d of this copy)", killed, run))]++
		}
		if v := configVersion(t, repo); v != 2 {
			t.Fatalf("the run that finished left version %d", v)
		}
		if counts := indexMagics(t, repo); counts["dpi1"] != 0 {
			t.Fatalf("the run that finished left index files %v", counts)
		}
		if run == 1 {
			continue // never killed: the calibration run showed this case
		}
		r, err := snapshot.Open(context.Background(), repo)
		if err != nil {
			t.Fatal(err)
		}
		restoresInProcess(t, r, disks, "finished")
		r.Close()
		mustBinary(t, nil, "verify", "-repo", repo)
		mustBinary(t, nil, "verify", "-repo", repo, "-structure-only")
	}
	t.Logf("migrate takes %s unkilled; %d kills left %v; %d copies finished", budget.Round(time.Millisecond), killed, left, finished)
	if kills >= 10 && left["version 2, version 1 files left"] == 0 {
		t.Errorf("no kill landed between the switch and the end of the deletes: %v", left)
	}
}

// diskpoint migrate of an encrypted version 1 repository, killed with
// SIGKILL at random instants and run again until a run finishes: after
// every kill the repository opens with its key as the version its config
// says and restores every point bit-exact; the run that finishes leaves an
// encrypted version 2 repository whose packs all have sealed headers, and
// which verifies clean. Steps are slowed as in
// TestMigrateKilledAtRandomInstants; it takes as many kills.
func TestMigrateEncryptedKilledAtRandomInstants(t *testing.T) {
	kills := max(*killCount/10, 3)
	if testing.Short() {
		kills = 3
	}
	key := bytes.Repeat([]byte{0x3c}, 32)
	base, disks := killRepoWithKey(t, 6, key)
	byKey := []string{"DISKPOINT_KEY=" + hex.EncodeToString(key)}
	env := append([]string{migrateStepDelayEnv + "=20ms"}, byKey...)
	start := time.Now()
	mustBinary(t, env, "migrate", "-repo", copyDir(t, base))
	budget := time.Since(start)

	rng := rand.New(rand.NewPCG(*killSeed, 13))
	left := map[int]int{}
	killed := 0
	for killed < kills {
		repo := copyDir(t, base)
		for run := 1; ; run++ {
			if !migrateKilledAtRandom(t, env, repo, rng, budget) {
				break
			}
			killed++
			when := fmt.Sprintf("kill %d (run %d of this copy)", killed, run)
			r, err := snapshot.OpenWithKey(context.Background(), repo, key)
			if err != nil {
				t.Fatalf("%s: open with the key: %v", when, err)
			}
			if v := r.Config().Version; v != configVersion(t, repo) {
				t.Fatalf("%s: opens as version %d, config says %d", when, v, configVersion(t, repo))
			}
			left[r.Config().Version]++
			restoresInProcess(t, r, disks, when)
			r.Close()
		}
		if v := configVersion(t, repo); v != 2 {
			t.Fatalf("the run that finished left version %d", v)
		}
		packs, _ := filepath.Glob(filepath.Join(repo, "packs", "*", "*"))
		for _, p := range packs {
			if !bytes.HasSuffix(readAll(t, p), []byte("dpk2")) {
				t.Fatalf("the run that finished left pack %s without a sealed header", p)
			}
		}
		if staged := dirListing(t, filepath.Join(repo, "migrate")); staged != "" {
			t.Fatalf("the run that finished left staged objects:\n%s", staged)
		}
		r, err := snapshot.OpenWithKey(context.Background(), repo, key)
		if err != nil {
			t.Fatal(err)
		}
		restoresInProcess(t, r, disks, "finished")
		r.Close()
		mustBinary(t, byKey, "verify", "-repo", repo)
	}
	t.Logf("encrypted migrate takes %s unkilled; %d kills left versions %v", budget.Round(time.Millisecond), killed, left)
}

// migrateKilledAtRandom runs diskpoint migrate on repo with env and sends
// it SIGKILL at a random instant up to one and a half times budget (how
// long a run takes unkilled). It reports whether the kill landed; a run
// that fails without being killed fails the test.
func migrateKilledAtRandom(t *testing.T, env []string, repo string, rng *rand.Rand, budget time.Duration) bool {
	t.Helper()
	child := startChildEnv(t, env, "migrate", "-repo", repo)
	exited := make(chan error, 1)
	go func() { exited <- child.cmd.Wait() }()
	var err error
	select {
	case err = <-exited:
	case <-time.After(time.Duration(rng.Int64N(int64(budget) * 3 / 2))):
		child.cmd.Process.Signal(syscall.SIGKILL)
		err = <-exited
	}
	if err == nil {
		return false
	}
	if status, ok := child.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || status.Signal() != syscall.SIGKILL {
		t.Fatalf("migrate failed without being killed: %v: %s", err, child.stderr.Bytes())
	}
	return true
}
