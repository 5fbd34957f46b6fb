package main

import (
	"context"
	"fmt"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/chain/location"
	"github.com/diskpoint/diskpoint/snapshot"
)

// Every -repo (and -to-repo) value goes through chain/location: a plain
// path or local:PATH is a directory, s3: and azure: an object store whose
// credentials come from the environment, and any other scheme is refused
// before anything is created.

// openLocation opens the repository at repo with cred.
func openLocation(ctx context.Context, repo string, cred chain.Credential) (*snapshot.Repository, error) {
	loc, err := location.Parse(repo)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	if loc.IsLocal() {
		return snapshot.OpenWithCredential(ctx, loc.Path, cred)
	}
	store, err := loc.NewStore(nil)
	if err != nil {
		return nil, err
	}
	r, err := snapshot.OpenStoreWithCredential(ctx, store, cred)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("repository %s: %w", loc, err)
	}
	return r, nil
}

// initLocation creates a repository at repo.
func initLocation(ctx context.Context, repo string, opts snapshot.InitOptions) (*snapshot.Repository, error) {
	loc, err := location.Parse(repo)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	if loc.IsLocal() {
		return snapshot.Init(ctx, loc.Path, opts)
	}
	store, err := loc.NewStore(nil)
	if err != nil {
		return nil, err
	}
	r, err := snapshot.InitStore(ctx, store, opts)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("repository %s: %w", loc, err)
	}
	return r, nil
}

// repoFlagUsage describes -repo.
const repoFlagUsage = "repository `location`: a directory (local:DIR for one whose name has a colon), s3:http[s]://HOST/BUCKET/PREFIX or azure:CONTAINER:/PREFIX; credentials from the environment"
