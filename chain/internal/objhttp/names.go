package objhttp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/diskpoint/diskpoint/chain"
)

// Prefix returns the key prefix a store puts before every object name:
// prefix without its leading and trailing slashes, then one slash; "" for
// none. A prefix that is no valid object name is refused.
func Prefix(prefix string) (string, error) {
	p := strings.Trim(prefix, "/")
	if p == "" {
		return "", nil
	}
	if err := chain.CheckObjectName(p); err != nil {
		return "", fmt.Errorf("prefix: %w", err)
	}
	return p + "/", nil
}

// Default sets *v to d when it is zero or negative: an option left unset.
func Default[T cmp.Ordered](v *T, d T) {
	var zero T
	if *v <= zero {
		*v = d
	}
}

// CheckPathFree enforces the Store rule that no object's name is a path
// prefix of another's, where a flat key space does not: before op writes
// name, no leading part of it (up to a slash) may be an object, and no
// object may lie under name + "/". stat reports a leading part's object
// (chain.ErrNotFound if there is none); anyUnder whether some object lies
// under name + "/". The checks run in parallel, and are not atomic with
// the write.
func CheckPathFree(ctx context.Context, op, name string, stat func(ctx context.Context, name string) error, anyUnder func(ctx context.Context, name string) (bool, error)) error {
	g, gctx := errgroup.WithContext(ctx)
	for i := range len(name) {
		if name[i] != '/' {
			continue
		}
		dir := name[:i]
		g.Go(func() error {
			err := stat(gctx, dir)
			switch {
			case err == nil:
				return fmt.Errorf("%s %s: its leading part %s is an object: %w", op, name, dir, chain.ErrInvalidName)
			case errors.Is(err, chain.ErrNotFound):
				return nil
			}
			return err
		})
	}
	g.Go(func() error {
		found, err := anyUnder(gctx, name)
		if err == nil && found {
			err = fmt.Errorf("%s %s: objects exist under %s/: %w", op, name, name, chain.ErrInvalidName)
		}
		return err
	})
	return g.Wait()
}
