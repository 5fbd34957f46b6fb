package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

// testRepoFormat is the kind of repository the tests that share one
// between processes (the kill harness, the soak, the multi-process and
// killed-copy tests) work on: DISKPOINT_TEST_FORMAT, as for the chain and
// snapshot suites. "1" (or unset) is a version 1 repository, "2" a version
// 2 one, "migrated" a version 1 repository with restore points in it that
// diskpoint migrate converted to version 2.
func testRepoFormat(t *testing.T) string {
	t.Helper()
	format := os.Getenv("DISKPOINT_TEST_FORMAT")
	if format == "" {
		format = "1"
	}
	return format
}

// seededPoint is a restore point the setup of a repository committed
// before the test began (a mode that converts a repository with points in
// it would have some), and the bytes each of its disks must restore to.
type seededPoint struct {
	collection, id string
	images         map[string][]byte // disk name -> bytes
}

// initTestRepo makes the repository at dir, of the given kind (see
// testRepoFormat), with the CLI's init and extra init flags (-block-size),
// checks that it is what was asked for, and returns the restore points the
// setup committed in it: the tests that keep an account of every point
// must know them.
//
// A kind that converts a repository (init version 1, create points,
// migrate) is a case here that returns the points it created.
func initTestRepo(t *testing.T, dir, format string, initArgs ...string) []seededPoint {
	t.Helper()
	var version int
	var points []seededPoint
	switch format {
	case "1", "2":
		version, _ = strconv.Atoi(format)
		mustCLI(t, append([]string{"init", "-repo", dir, "-format", format}, initArgs...)...)
	case "migrated":
		version = 2
		mustCLI(t, append([]string{"init", "-repo", dir, "-format", "1"}, initArgs...)...)
		points = seedPoints(t, dir)
		mustCLI(t, "migrate", "-repo", dir)
	default:
		t.Fatalf("DISKPOINT_TEST_FORMAT=%q: want 1, 2 or migrated", format)
	}
	repo, err := snapshot.Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := repo.Config().Version; got != version {
		t.Fatalf("%s: a repository of format %d, want %d", dir, got, version)
	}
	return points
}

// seedPoints commits two restore points of two small disks into the
// repository at dir, the second after a change, and returns them.
func seedPoints(t *testing.T, dir string) []seededPoint {
	t.Helper()
	disks := t.TempDir()
	images := map[string]string{"sa": filepath.Join(disks, "sa.img"), "sb": filepath.Join(disks, "sb.img")}
	for i, name := range []string{"sa", "sb"} {
		if err := demodisk.Create(images[name], 2<<20, uint64(i+11), demodisk.MixedImage); err != nil {
			t.Fatal(err)
		}
	}
	var points []seededPoint
	for round := range 2 {
		if round == 1 {
			if _, err := demodisk.Scatter(images["sa"], 0.05, 8); err != nil {
				t.Fatal(err)
			}
		}
		var rp struct{ ID string }
		out := mustCLI(t, "create", "-repo", dir, "-collection", "seed", "-json", "sa="+images["sa"], "sb="+images["sb"])
		if err := json.Unmarshal([]byte(out), &rp); err != nil || rp.ID == "" {
			t.Fatalf("create -json said %q: %v", out, err)
		}
		p := seededPoint{collection: "seed", id: rp.ID, images: map[string][]byte{}}
		for name, path := range images {
			p.images[name] = readAll(t, path)
		}
		points = append(points, p)
	}
	return points
}
