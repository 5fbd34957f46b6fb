package chain

import (
	"context"
	"errors"
	"testing"
)

// Migrate takes the exclusive lock: while a create holds the shared one
// (here or in another process) it refuses with ErrLocked and changes
// nothing; once the create is done it converts the repository, an empty
// one too.
func TestMigrateHoldsTheExclusiveLock(t *testing.T) {
	ctx := context.Background()
	store := NewMemStore()
	cfg, err := NewConfig(MinBlockSize)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Version = FormatVersion
	if _, err := Init(ctx, store, cfg, nil); err != nil {
		t.Fatal(err)
	}
	writer, err := Open(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	held, err := writer.lock(ctx, false, "create")
	if err != nil {
		t.Fatal(err)
	}
	repo, err := Open(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Migrate(ctx, MigrateOptions{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("migrate while a create holds the lock: %v, want ErrLocked", err)
	}
	if data, _ := store.Get(ctx, configName); mustDecodeConfig(t, data).Version != FormatVersion {
		t.Fatal("the refused migrate changed the config")
	}
	held.unlock()
	report, err := repo.Migrate(ctx, MigrateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !report.Converted || report.Blobs != 0 || report.V2IndexFilesWritten != 0 {
		t.Fatalf("migrate of an empty repository: %+v", report)
	}
	if data, _ := store.Get(ctx, configName); mustDecodeConfig(t, data).Version != FormatVersion2 {
		t.Fatal("the config is not version 2 after migrate")
	}
}

func mustDecodeConfig(t *testing.T, data []byte) Config {
	t.Helper()
	cfg, err := decodeConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
