package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

// runBinary runs the CLI as a child process (the test binary re-executed
// as diskpoint) with extra environment variables, and returns its exit
// status and output.
func runBinary(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	c := &childRun{cmd: exec.Command(os.Args[0], args...)}
	c.cmd.Env = append(append(os.Environ(), "DISKPOINT_TEST_CLI=1"), env...)
	c.cmd.Stdout, c.cmd.Stderr = &c.stdout, &c.stderr
	err := c.cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return exit.ExitCode(), c.stdout.String(), c.stderr.String()
	case err != nil:
		t.Fatal(err)
	}
	return 0, c.stdout.String(), c.stderr.String()
}

// mustBinary is runBinary that fails the test unless the command succeeds.
func mustBinary(t *testing.T, env []string, args ...string) string {
	t.Helper()
	code, out, errOut := runBinary(t, env, args...)
	if code != 0 {
		t.Fatalf("diskpoint %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

// Sizes are read with go-humanize, every usual spelling, as binary units.
func TestCLISizesParseEverySpelling(t *testing.T) {
	dir := t.TempDir()
	for i, size := range []string{"64kb", "64KiB", "64K", "64k", "64KB", "64 KiB", "65536", "1MiB", "1m"} {
		repo := filepath.Join(dir, "repo"+string(rune('a'+i)))
		out := mustBinary(t, nil, "init", "-repo", repo, "-block-size", size)
		want := "64 KiB"
		if strings.HasPrefix(size, "1") {
			want = "1.0 MiB"
		}
		if !strings.Contains(out, "block size "+want) {
			t.Errorf("init -block-size %q: %s; want block size %s", size, out, want)
		}
	}
	for _, bad := range []string{"64q", "kb", "-1K", "0"} {
		if code, _, errOut := runBinary(t, nil, "init", "-repo", filepath.Join(dir, "bad"), "-block-size", bad); code != 2 || !strings.Contains(errOut, "-block-size") {
			t.Errorf("init -block-size %q: exit %d, %s; want a usage error", bad, code, errOut)
		}
	}
}

// A -changed range past the disk's end is an error naming the file and
// line, and nothing is stored.
func TestCLIChangedRangePastDiskEnd(t *testing.T) {
	dir := t.TempDir()
	repo, img, ranges := filepath.Join(dir, "repo"), filepath.Join(dir, "d.img"), filepath.Join(dir, "d.ranges")
	mustBinary(t, nil, "init", "-repo", repo)
	if err := demodisk.Create(img, 1<<20, 1, demodisk.MixedImage); err != nil {
		t.Fatal(err)
	}
	mustBinary(t, nil, "create", "-repo", repo, "-collection", "vm", "d="+img)
	os.WriteFile(ranges, []byte("0 4096\n1048000 4096\n"), 0o600)
	code, _, errOut := runBinary(t, nil, "create", "-repo", repo, "-collection", "vm", "-changed", "d="+ranges, "d="+img)
	if code != 1 || !strings.Contains(errOut, "d.ranges") || !strings.Contains(errOut, "line 2") || !strings.Contains(errOut, "past the disk's end") {
		t.Fatalf("create with a range past the end: exit %d, %s", code, errOut)
	}
	if out := mustBinary(t, nil, "list", "-repo", repo, "-collection", "vm", "-json"); strings.Count(out, `"id"`) != 1 {
		t.Fatalf("the failed create stored a point: %s", out)
	}
}

// pointsAtTimes makes a repository whose collection vm has one restore
// point created at each RFC 3339 time, through the library (the CLI always
// creates at now), and returns the repository and the points' IDs.
func pointsAtTimes(t *testing.T, times ...string) (string, []string) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	repoDir, img := filepath.Join(dir, "repo"), filepath.Join(dir, "d.img")
	repo, err := snapshot.Init(ctx, repoDir, snapshot.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	vm, _ := repo.Collection("vm")
	var ids []string
	for i, s := range times {
		at, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		if err := demodisk.Create(img, 256<<10, uint64(i), demodisk.MixedImage); err != nil {
			t.Fatal(err)
		}
		rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: img}}, Now: func() time.Time { return at }})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rp.ID)
	}
	return repoDir, ids
}

// list shows times to the second, with the zone's offset.
func TestCLIListShowsSecondsAndZone(t *testing.T) {
	repo, _ := pointsAtTimes(t, "2026-11-22T03:04:05Z")
	out := mustBinary(t, []string{"TZ=Asia/Kolkata"}, "list", "-repo", repo, "-collection", "vm")
	if !strings.Contains(out, "2026-11-22 08:34:05 +05:30") {
		t.Fatalf("list in Asia/Kolkata:\n%s\nwant the time as 2026-11-22 08:34:05 +05:30", out)
	}
}

// prune's days are local days unless -utc; -keep-yearly and -keep-within
// keep what they say.
func TestCLIPruneLocalDaysYearlyWithin(t *testing.T) {
	// 03:00 UTC on the 22nd is the 21st in New York: two local days, one UTC day.
	times := []string{"2024-06-01T00:00:00Z", "2025-06-01T00:00:00Z", "2026-11-22T03:00:00Z", "2026-11-22T12:00:00Z"}
	repo, ids := pointsAtTimes(t, times...)
	newYork := []string{"TZ=America/New_York"}
	prune := func(args ...string) (kept, deleted []string) {
		t.Helper()
		var result struct {
			Kept, Deleted []struct{ ID string }
		}
		out := mustBinary(t, newYork, append([]string{"prune", "-repo", repo, "-collection", "vm", "-dry-run", "-json"}, args...)...)
		if err := json.Unmarshal([]byte(out), &result); err != nil {
			t.Fatalf("prune %v: %s: %v", args, out, err)
		}
		for _, p := range result.Kept {
			kept = append(kept, p.ID)
		}
		for _, p := range result.Deleted {
			deleted = append(deleted, p.ID)
		}
		return kept, deleted
	}
	if kept, _ := prune("-keep-daily", "2"); !slices.Equal(kept, []string{ids[3], ids[2]}) {
		t.Errorf("-keep-daily 2 in New York keeps %v, want the two points of the 22nd UTC (two local days)", kept)
	}
	if kept, _ := prune("-keep-daily", "2", "-utc"); !slices.Equal(kept, []string{ids[3], ids[1]}) {
		t.Errorf("-keep-daily 2 -utc keeps %v, want the last of the 22nd and the 2025 point", kept)
	}
	if kept, _ := prune("-keep-yearly", "2"); !slices.Equal(kept, []string{ids[3], ids[1]}) {
		t.Errorf("-keep-yearly 2 keeps %v, want the newest of 2026 and of 2025", kept)
	}
	if kept, _ := prune("-keep-within", "1d"); !slices.Equal(kept, []string{ids[3], ids[2]}) {
		t.Errorf("-keep-within 1d keeps %v, want the two points within a day of the newest", kept)
	}
	if kept, _ := prune("-keep-within", "1y26w"); !slices.Equal(kept, []string{ids[3], ids[2], ids[1]}) {
		t.Errorf("-keep-within 1y26w keeps %v, want the three points since 2025-05-24", kept)
	}
	for _, bad := range []string{"soon", "-1d", "0s"} {
		if code, _, errOut := runBinary(t, nil, "prune", "-repo", repo, "-collection", "vm", "-keep-within", bad); code != 2 || !strings.Contains(errOut, "-keep-within") {
			t.Errorf("-keep-within %q: exit %d, %s", bad, code, errOut)
		}
	}
	out := mustBinary(t, newYork, "prune", "-repo", repo, "-collection", "vm", "-keep-last", "1", "-dry-run")
	if !strings.Contains(out, "2026-11-22 07:00:00 -05:00") {
		t.Errorf("prune's text shows times without seconds or zone:\n%s", out)
	}
}

// damageAPack creates two restore points in a new repository and flips a
// byte in the middle of its largest pack; it returns the repository and
// the pack's ID.
func damageAPack(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	repo, img := filepath.Join(dir, "repo"), filepath.Join(dir, "d.img")
	mustBinary(t, nil, "init", "-repo", repo)
	if err := demodisk.Create(img, 2<<20, 5, demodisk.Mix{Random: 1}); err != nil {
		t.Fatal(err)
	}
	mustBinary(t, nil, "create", "-repo", repo, "-collection", "vm", "d="+img)
	var pack string
	var size int64
	filepath.Walk(filepath.Join(repo, "packs"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Size() > size {
			pack, size = p, fi.Size()
		}
		return nil
	})
	data, _ := os.ReadFile(pack)
	data[len(data)/3] ^= 1
	os.WriteFile(pack, data, 0o600)
	return repo, filepath.Base(pack)
}

// verify -structure-only reads no data, -read-data-subset reads a part, and
// the JSON report names damaged objects in kind, id and pack fields.
func TestCLIVerifySubsetsAndJSON(t *testing.T) {
	repo, pack := damageAPack(t)
	out := mustBinary(t, nil, "verify", "-repo", repo, "-structure-only")
	if !strings.Contains(out, "0 B read") || !strings.Contains(out, "their data was not read (-structure-only)") {
		t.Errorf("verify -structure-only:\n%s", out)
	}
	damaged := 0
	for _, subset := range []string{"1/2", "2/2"} {
		code, out, errOut := runBinary(t, nil, "verify", "-repo", repo, "-read-data-subset", subset)
		if code != 0 {
			damaged++
		}
		if !strings.Contains(out, "-read-data-subset "+subset) && !strings.Contains(out, "checked") {
			t.Errorf("verify -read-data-subset %s: %s %s", subset, out, errOut)
		}
	}
	if damaged != 1 {
		t.Errorf("of the subsets 1/2 and 2/2, %d found the damaged pack; want exactly one", damaged)
	}
	if code, _, errOut := runBinary(t, nil, "verify", "-repo", repo, "-read-data-subset", "3/2"); code != 2 || !strings.Contains(errOut, "-read-data-subset") {
		t.Errorf("verify -read-data-subset 3/2: exit %d, %s", code, errOut)
	}
	code, out, _ := runBinary(t, nil, "verify", "-repo", repo, "-read-data-subset", "100%", "-json")
	var report struct {
		Damage []map[string]any `json:"damage"`
	}
	if err := json.Unmarshal([]byte(out), &report); code == 0 || err != nil || len(report.Damage) == 0 {
		t.Fatalf("verify -json of a damaged repository: exit %d, %s, %v", code, out, err)
	}
	named := false
	for _, d := range report.Damage {
		if _, prose := d["object"]; prose || d["kind"] == nil || d["id"] == nil {
			t.Errorf("damage %v does not name its object in kind and id fields", d)
		}
		if rps, ok := d["restore_points"].([]any); !ok || rps == nil {
			t.Errorf("damage %v: restore_points is not a list", d)
		}
		if d["id"] == pack || d["pack"] == pack {
			named = true
		}
	}
	if !named {
		t.Errorf("no damage names pack %s: %s", pack, out)
	}
}

// list shows a damaged restore point, marked, with the reason (in JSON:
// "damaged": true), rather than leaving it out with a log line; the STORED
// column's header says it is what a point added when it was created.
func TestCLIListShowsDamagedPoints(t *testing.T) {
	repo, ids := pointsAtTimes(t, "2026-11-20T10:00:00Z", "2026-11-21T10:00:00Z")
	if err := os.WriteFile(filepath.Join(repo, "manifests", "vm", ids[0]), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runBinary(t, nil, "list", "-repo", repo, "-collection", "vm")
	if code != 0 || errOut != "" {
		t.Fatalf("list: exit %d, stderr %q", code, errOut)
	}
	lines := strings.Split(out, "\n")
	if !strings.Contains(lines[0], "STORED AT CREATE") {
		t.Errorf("list's header %q does not say the STORED column is what a point added at create", lines[0])
	}
	var damagedRow, soundRow bool
	for _, l := range lines {
		damagedRow = damagedRow || strings.HasPrefix(l, ids[0]) && strings.Contains(l, "DAMAGED")
		soundRow = soundRow || strings.HasPrefix(l, ids[1]) && !strings.Contains(l, "DAMAGED") && (strings.Contains(l, "crash") || strings.Contains(l, "inconsistent"))
	}
	if !damagedRow || !soundRow || !strings.Contains(out, "damaged vm/"+ids[0]) {
		t.Fatalf("list does not show the damaged point marked and the sound one as it is:\n%s", out)
	}
	var points []struct {
		ID           string `json:"id"`
		Consistency  string `json:"consistency"`
		Damaged      bool   `json:"damaged"`
		DamageReason string `json:"damage_reason"`
	}
	out = mustBinary(t, nil, "list", "-repo", repo, "-collection", "vm", "-json")
	if err := json.Unmarshal([]byte(out), &points); err != nil || len(points) != 2 {
		t.Fatalf("list -json: %s, %v", out, err)
	}
	for _, p := range points {
		switch p.ID {
		case ids[0]:
			if !p.Damaged || p.DamageReason == "" {
				t.Errorf("damaged point in list -json: %+v", p)
			}
		case ids[1]:
			if p.Damaged || p.Consistency != "crash" && p.Consistency != "inconsistent" { // inconsistent where the image was read live
				t.Errorf("sound point in list -json: %+v", p)
			}
		default:
			t.Errorf("list -json lists %+v", p)
		}
	}
	if strings.Contains(out, "null") {
		t.Errorf("list -json has a null: %s", out)
	}
}

// stats reports the repository, each collection and each point, in text
// and JSON, as restic stats and borg info do.
func TestCLIStats(t *testing.T) {
	dir := t.TempDir()
	repo, img := filepath.Join(dir, "repo"), filepath.Join(dir, "d.img")
	mustBinary(t, nil, "init", "-repo", repo)
	demodisk.Create(img, 2<<20, 4, demodisk.Mix{Random: 1})
	mustBinary(t, nil, "create", "-repo", repo, "-collection", "vm1", "d="+img)
	mustBinary(t, nil, "create", "-repo", repo, "-collection", "vm1", "d="+img)
	mustBinary(t, nil, "create", "-repo", repo, "-collection", "vm2", "d="+img)

	var st struct {
		RestorePoints int     `json:"restore_points"`
		LogicalBytes  int64   `json:"logical_bytes"`
		StoredBytes   int64   `json:"stored_bytes"`
		DedupRatio    float64 `json:"dedup_ratio"`
		Chunks, Packs int
		PackFiles     int   `json:"pack_files"`
		PackBytes     int64 `json:"pack_bytes"`
		Collections   []struct {
			Name           string
			RestorePoints  int   `json:"restore_points"`
			FreedIfDeleted int64 `json:"freed_if_deleted"`
			Points         []struct {
				ID             string
				LogicalBytes   int64 `json:"logical_bytes"`
				StoredBytes    int64 `json:"stored_bytes"`
				AddedBytes     int64 `json:"added_bytes"`
				FreedIfDeleted int64 `json:"freed_if_deleted"`
				Chunks, Packs  int
			}
		}
	}
	out := mustBinary(t, nil, "stats", "-repo", repo, "-json")
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("stats -json: %s: %v", out, err)
	}
	if st.RestorePoints != 3 || st.LogicalBytes != 3*2<<20 || st.StoredBytes == 0 || st.DedupRatio < 2.5 || st.Chunks != 32 || st.Packs == 0 || len(st.Collections) != 2 {
		t.Fatalf("stats -json: %s", out)
	}
	vm1 := st.Collections[0]
	if vm1.Name != "vm1" || len(vm1.Points) != 2 || vm1.FreedIfDeleted != 0 {
		t.Errorf("vm1 shares everything with vm2, so frees nothing: %+v", vm1)
	}
	first, second := vm1.Points[0], vm1.Points[1]
	if first.AddedBytes != first.StoredBytes || second.AddedBytes != 0 || second.StoredBytes != first.StoredBytes || first.FreedIfDeleted != 0 || first.Chunks != 32 {
		t.Errorf("points: %+v", vm1.Points)
	}
	text := mustBinary(t, nil, "stats", "-repo", repo)
	for _, want := range []string{"3 restore points", "logical size:", "stored size:", "dedup ratio:", "COLLECTION", "FREED IF DELETED", "ADDED AT CREATE", "collection vm1:", first.ID, "vm2"} {
		if !strings.Contains(text, want) {
			t.Errorf("stats text lacks %q:\n%s", want, text)
		}
	}
	if out := mustBinary(t, nil, "stats", "-repo", repo, "-collection", "vm2"); strings.Contains(out, "collection vm1:") || !strings.Contains(out, "collection vm2:") {
		t.Errorf("stats -collection vm2:\n%s", out)
	}
	if code, _, errOut := runBinary(t, nil, "stats", "-repo", repo, "-collection", "vm9"); code == 0 || !strings.Contains(errOut, "vm9") {
		t.Errorf("stats -collection vm9: exit %d, %s", code, errOut)
	}
	empty := filepath.Join(dir, "empty")
	mustBinary(t, nil, "init", "-repo", empty)
	if out := mustBinary(t, nil, "stats", "-repo", empty, "-json"); strings.Contains(out, "null") || !strings.Contains(out, `"collections": []`) {
		t.Errorf("stats -json of an empty repository: %s", out)
	}
}

// The library's warnings reach stderr, as log lines, and the command goes
// on: here a restore reads past a damaged index file (its packs' headers
// say where the blobs are).
func TestCLIShowsTheLibrarysWarnings(t *testing.T) {
	dir := t.TempDir()
	repo, img, out := filepath.Join(dir, "repo"), filepath.Join(dir, "d.img"), filepath.Join(dir, "r.img")
	if err := demodisk.Create(img, 1<<20, 3, demodisk.MixedImage); err != nil {
		t.Fatal(err)
	}
	mustBinary(t, nil, "init", "-repo", repo)
	mustBinary(t, nil, "create", "-repo", repo, "-collection", "vm", "d="+img)
	indexes, _ := filepath.Glob(filepath.Join(repo, "index", "*"))
	if len(indexes) == 0 {
		t.Fatal("no index file")
	}
	for _, f := range indexes {
		if err := os.WriteFile(f, []byte("garbled"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	code, _, errOut := runBinary(t, nil, "restore", "-repo", repo, "-collection", "vm", "-point", "latest", "-disk", "d", "-to", out)
	if code != 0 || !strings.Contains(errOut, "level=WARN") || !strings.Contains(errOut, "damaged index file") {
		t.Fatalf("restore past a damaged index file: exit %d, stderr %q; want exit 0 and the warning", code, errOut)
	}
	restored, _ := os.ReadFile(out)
	original, _ := os.ReadFile(img)
	if len(original) == 0 || !bytes.Equal(restored, original) {
		t.Error("the restore past a damaged index file is not bit-exact")
	}
}
