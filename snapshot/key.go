package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/diskpoint/diskpoint/chain"
)

// The environment variables an encrypted repository's key is read from:
// KeyEnv holds the key's 64 hex digits, or KeyFileEnv names a file that
// does. Keys never travel on command lines, where ps and shell histories
// would show them.
const (
	KeyEnv     = "DISKPOINT_KEY"
	KeyFileEnv = "DISKPOINT_KEY_FILE"
)

// KeyFromEnvironment returns the key the environment gives, or nil if it
// gives none.
func KeyFromEnvironment() ([]byte, error) {
	if s := os.Getenv(KeyEnv); s != "" {
		key, err := chain.ParseKey(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", KeyEnv, err)
		}
		return key, nil
	}
	if path := os.Getenv(KeyFileEnv); path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", KeyFileEnv, err)
		}
		key, err := chain.ParseKey(string(data))
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", KeyFileEnv, path, err)
		}
		return key, nil
	}
	return nil, nil
}

// OpenFromEnvironment opens the repository in dir with the environment's
// key, if it gives one; a missing key for an encrypted repository says
// which variables to set.
func OpenFromEnvironment(ctx context.Context, dir string) (*Repository, error) {
	key, err := KeyFromEnvironment()
	if err != nil {
		return nil, err
	}
	repo, err := OpenWithKey(ctx, dir, key)
	if errors.Is(err, ErrKeyRequired) && key == nil {
		return nil, fmt.Errorf("%w (set %s or %s)", err, KeyEnv, KeyFileEnv)
	}
	return repo, err
}
