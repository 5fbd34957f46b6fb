package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"os"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/snapshot"
)

// The key of an encrypted repository comes from the environment, never from
// the command line (where ps and shell histories would show it):
// DISKPOINT_KEY holds the 64 hex digits, or DISKPOINT_KEY_FILE names a file
// that does.
const (
	keyEnv     = "DISKPOINT_KEY"
	keyFileEnv = "DISKPOINT_KEY_FILE"
)

// keyFromEnv returns the key the environment gives, or nil if none.
func keyFromEnv() ([]byte, error) {
	if s := os.Getenv(keyEnv); s != "" {
		key, err := chain.ParseKey(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", keyEnv, err)
		}
		return key, nil
	}
	if path := os.Getenv(keyFileEnv); path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", keyFileEnv, err)
		}
		key, err := chain.ParseKey(string(data))
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", keyFileEnv, path, err)
		}
		return key, nil
	}
	return nil, nil
}

// openRepo opens a repository with the environment's key, if any.
func openRepo(ctx context.Context, dir string) (*snapshot.Repository, error) {
	key, err := keyFromEnv()
	if err != nil {
		return nil, err
	}
	repo, err := snapshot.OpenWithKey(ctx, dir, key)
	if err != nil && key == nil {
		return nil, fmt.Errorf("%w (set %s or %s)", err, keyEnv, keyFileEnv)
	}
	return repo, err
}

func runKeygen(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
	if err := parse(fs, args, nil); err != nil {
		return err
	}
	key, err := chain.NewKey()
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, hex.EncodeToString(key))
	return nil
}
