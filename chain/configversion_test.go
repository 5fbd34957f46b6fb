package chain_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
)

// A repository is version 1 unless Init is told otherwise; version 2 opens
// as version 2; a version 2 config may not claim version 1's encryption.
func TestConfigVersions(t *testing.T) {
	ctx := context.Background()
	for _, version := range []int{chain.FormatVersion, chain.FormatVersion2} {
		cfg, err := chain.NewConfig(0)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Version != chain.FormatVersion {
			t.Fatalf("NewConfig makes version %d, want %d", cfg.Version, chain.FormatVersion)
		}
		cfg.Version = version
		store := chain.NewMemStore()
		if _, err := chain.Init(ctx, store, cfg, nil); err != nil {
			t.Fatalf("init version %d: %v", version, err)
		}
		repo, err := chain.Open(ctx, store, nil)
		if err != nil {
			t.Fatalf("open version %d: %v", version, err)
		}
		if got := repo.Config().Version; got != version {
			t.Errorf("opened version %d as %d", version, got)
		}
	}

	cfg, _ := chain.NewConfig(0)
	cfg.Version = chain.FormatVersion2
	key := make([]byte, chain.KeySize)
	cfg.Version = 3
	if _, err := chain.Init(ctx, chain.NewMemStore(), cfg, nil); !errors.Is(err, chain.ErrUnsupportedVersion) {
		t.Errorf("init version 3: %v, want ErrUnsupportedVersion", err)
	}

	// A version 2 config that claims version 1's encryption is refused.
	store := chain.NewMemStore()
	enc, _ := chain.NewConfig(0)
	if _, err := chain.Init(ctx, store, enc, key); err != nil {
		t.Fatal(err)
	}
	data, err := store.Get(ctx, "config")
	if err != nil {
		t.Fatal(err)
	}
	store.Put(ctx, "config", []byte(replaceOnce(t, string(data), `"version": 1`, `"version": 2`)))
	if _, err := chain.Open(ctx, store, key); !errors.Is(err, chain.ErrUnsupportedVersion) {
		t.Errorf("open a version 2 config with version 1 encryption: %v, want ErrUnsupportedVersion", err)
	}
}

func replaceOnce(t *testing.T, s, old, replacement string) string {
	t.Helper()
	i := strings.Index(s, old)
	if i < 0 {
		t.Fatalf("%q not in %q", old, s)
	}
	return s[:i] + replacement + s[i+len(old):]
}
