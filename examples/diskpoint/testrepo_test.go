package main

import (
	"context"
	"os"
	"strconv"
	"testing"

	"github.com/diskpoint/diskpoint/snapshot"
)

// testRepoFormat is the kind of repository the tests that share one
// between processes (the kill harness, the soak, the multi-process and
// killed-copy tests) work on: DISKPOINT_TEST_FORMAT, as for the chain and
// snapshot suites. "1" (or unset) is a version 1 repository, "2" a version
// 2 one.
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
	default:
		t.Fatalf("DISKPOINT_TEST_FORMAT=%q: want 1 or 2", format)
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
