package snapshot_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/snapshot"
)

// InitOptions.Format picks the format version; 0 is version 1.
func TestInitFormat(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ format, want int }{{0, chain.FormatVersion}, {chain.FormatVersion, chain.FormatVersion}, {chain.FormatVersion2, chain.FormatVersion2}} {
		dir := filepath.Join(t.TempDir(), "repo")
		if _, err := snapshot.Init(ctx, dir, snapshot.InitOptions{Format: tc.format}); err != nil {
			t.Fatalf("init format %d: %v", tc.format, err)
		}
		repo, err := snapshot.Open(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		if got := repo.Chain().Config().Version; got != tc.want {
			t.Errorf("format %d: opened version %d, want %d", tc.format, got, tc.want)
		}
		repo.Close()
	}
}
