package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"

	"github.com/diskpoint/diskpoint/chain"
)

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
