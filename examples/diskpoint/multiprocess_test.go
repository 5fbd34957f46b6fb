package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

// Processes share a repository: two create into different collections at
// the same time while a third collects garbage; creates wait for the GC
// (-lock-wait) and GC for the creates. Everything committed restores.
// DISKPOINT_TEST_FORMAT picks the kind of repository (testRepoFormat).
func TestProcessesShareARepository(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	expected := map[string][]byte{}
	for _, p := range initTestRepo(t, repo, testRepoFormat(t), "-block-size", "16KiB") {
		for disk, image := range p.images {
			expected[p.collection+"/"+p.id+"/"+disk] = image
		}
	}
	disks := map[string]string{}
	for i, name := range []string{"vm1", "vm2"} {
		disks[name] = filepath.Join(dir, name+".img")
		demodisk.Create(disks[name], 4<<20, uint64(10+i), demodisk.MixedImage)
	}
	for round := range 6 {
		images := map[string][]byte{}
		creates := map[string]*childRun{}
		for name, path := range disks {
			if _, err := demodisk.Scatter(path, 0.03, uint64(round*10+len(name))); err != nil {
				t.Fatal(err)
			}
			images[name] = readAll(t, path)
			creates[name] = startChild(t, "create", "-repo", repo, "-collection", name, "-lock-wait", "1m", "-json", "d="+path)
		}
		gc := startChild(t, "gc", "-repo", repo, "-lock-wait", "1m")
		for name, c := range creates {
			var rp struct{ ID string }
			if out := c.wait(t); json.Unmarshal(out, &rp) != nil || rp.ID == "" {
				t.Fatalf("create %s printed %q", name, out)
			}
			expected[name+"/"+rp.ID+"/d"] = images[name]
		}
		gc.wait(t)
	}
	ctx := context.Background()
	r, err := snapshot.Open(ctx, repo)
	if err != nil {
		t.Fatal(err)
	}
	if report, err := r.Verify(ctx, snapshot.VerifyOptions{}); err != nil || !report.OK() {
		t.Fatalf("verify: %+v %v", report, err)
	}
	for key, image := range expected {
		parts := strings.Split(key, "/") // collection/id/disk
		name, id, disk := parts[0], parts[1], parts[2]
		c, _ := r.Collection(name)
		out := filepath.Join(t.TempDir(), "out.img")
		if _, err := c.RestoreDisk(ctx, snapshot.RestoreOptions{Point: id, Disk: disk, Path: out}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(readAll(t, out), image) {
			t.Fatalf("%s restores the wrong bytes", key)
		}
	}
}
