package cachestore

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/diskpoint/diskpoint/chain"
)

// DefaultBase returns the directory that holds the caches of all
// repositories: $XDG_CACHE_HOME/diskpoint, or ~/.cache/diskpoint.
func DefaultBase() (string, error) {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "diskpoint"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("cache directory: %w (set XDG_CACHE_HOME)", err)
	}
	return filepath.Join(home, ".cache", "diskpoint"), nil
}

// RepositoryDir returns the cache directory of the repository in store:
// base/ID, ID being the repository's, read from its config (whose ID is
// in the clear in every format version). A store without a config is an
// error wrapping chain.ErrNotFound.
func RepositoryDir(ctx context.Context, store chain.Store, base string) (string, error) {
	data, err := store.Get(ctx, "config")
	if err != nil {
		return "", fmt.Errorf("cache directory: %w", err)
	}
	var cfg struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return "", fmt.Errorf("cache directory: config: %w", err)
	}
	if id, err := hex.DecodeString(cfg.ID); err != nil || len(id) < 16 {
		return "", fmt.Errorf("cache directory: config: repository ID %q is not hex: %w", cfg.ID, errors.Join(err, chain.ErrCorrupt))
	}
	return filepath.Join(base, cfg.ID), nil
}
