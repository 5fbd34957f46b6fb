package snapshot_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// The library never writes to slog's global default, which belongs to the
// program that imports it: with no logger it is silent, and with one it
// logs there (here, the hook runs of a create).
func TestLibraryLogsOnlyWhereTold(t *testing.T) {
	var global bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&global, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { slog.SetDefault(old) })

	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	disk := makeDisk(t, t.TempDir(), "d.img", 1<<20, 1)
	createWithHook(t, vm, disk)
	if global.Len() != 0 {
		t.Fatalf("the library wrote to slog's default logger:\n%s", global.String())
	}

	var mine bytes.Buffer
	repo.SetLogger(slog.New(slog.NewTextHandler(&mine, nil)))
	createWithHook(t, vm, disk)
	if !strings.Contains(mine.String(), "hook run") {
		t.Fatalf("the repository's logger heard no hook run: %q", mine.String())
	}
	if global.Len() != 0 {
		t.Fatalf("the library wrote to slog's default logger:\n%s", global.String())
	}
}
