package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/snapshot"
)

// The key of an encrypted repository comes from the environment (see
// snapshot.KeyEnv and snapshot.KeyFileEnv), never from the command line.
const (
	keyEnv     = snapshot.KeyEnv
	keyFileEnv = snapshot.KeyFileEnv
)

// keyFromEnv returns the key the environment gives, or nil if none.
func keyFromEnv() ([]byte, error) { return snapshot.KeyFromEnvironment() }

// openRepo opens a repository with the environment's key, if any.
func openRepo(ctx context.Context, dir string) (*snapshot.Repository, error) {
	return snapshot.OpenFromEnvironment(ctx, dir)
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
