package chain

import (
	"context"
	"errors"
	"testing"
)

// A process that opened a repository as version 1 and takes a lock after
// another process migrated it is refused: its writer would write a version
// 1 index file into a version 2 repository, its GC would take the version 2
// index files for damage and delete them. The process that migrated goes on.
func TestLocksRefuseAFormatChangedSinceOpen(t *testing.T) {
	ctx := context.Background()
	store := NewMemStore()
	newRepositoryOfVersion(t, store, FormatVersion)
	stale, err := Open(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	migrating, err := Open(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := migrating.Migrate(ctx, MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	if w, err := stale.NewWriter(ctx, "create"); !errors.Is(err, ErrFormatChanged) {
		if err == nil {
			w.Close()
		}
		t.Errorf("a writer of the repository opened as version 1: %v, want ErrFormatChanged", err)
	}
	if _, err := stale.GC(ctx, GCOptions{}); !errors.Is(err, ErrFormatChanged) {
		t.Errorf("a GC of the repository opened as version 1: %v, want ErrFormatChanged", err)
	}
	w, err := migrating.NewWriter(ctx, "create")
	if err != nil {
		t.Fatalf("the process that migrated: %v", err)
	}
	w.Close()
	reopened, err := Open(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reopened.GC(ctx, GCOptions{}); err != nil {
		t.Fatalf("a GC of the repository opened again: %v", err)
	}
}
