package chain

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkHeadsSetCheck measures what a create pays, before it reads a
// parent, to check a collection's heads record against the names listed:
// listing the 10,000 manifest names of a LocalStore, and their set digest.
func BenchmarkHeadsSetCheck(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	store, err := NewLocalStore(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	cfg, err := NewTestConfig(0)
	if err != nil {
		b.Fatal(err)
	}
	repo, err := Init(ctx, store, cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	coll := filepath.Join(dir, "manifests", "many")
	if err := os.MkdirAll(coll, 0o755); err != nil {
		b.Fatal(err)
	}
	for i := range 10_000 {
		// Names as points get them (a time and a random part); empty files
		// are enough for a listing.
		if err := os.WriteFile(filepath.Join(coll, fmt.Sprintf("20261124T034500.%06dZ-%08x", i, i*2654435761)), nil, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	ids, err := repo.manifestIDs(ctx, "many")
	if err != nil || len(ids) != 10_000 {
		b.Fatalf("%d names, %v", len(ids), err)
	}
	b.Run("list", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := repo.manifestIDs(ctx, "many"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("digest", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			repo.manifestSetOf("many", ids)
		}
	})
}
