package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/chain/cachestore"
	"github.com/diskpoint/diskpoint/chain/location"
	"github.com/diskpoint/diskpoint/snapshot"
)

// Every -repo (and -to-repo) value goes through chain/location: a plain
// path or local:PATH is a directory, s3: and azure: an object store whose
// credentials come from the environment, and any other scheme is refused
// before anything is created. A remote repository is read through a local
// cache of its index files and tree packs (chain/cachestore) unless
// -no-cache says otherwise.

// locationForms are the forms a repository location takes, for the
// usage of the flags that name one.
const locationForms = "a directory (local:DIR for one whose name has a colon), s3:http[s]://HOST/BUCKET/PREFIX or azure:CONTAINER:/PREFIX; credentials from the environment"

// repoFlagUsage describes -repo.
const repoFlagUsage = "repository `location`: " + locationForms

// addCacheFlags adds -cache-dir and -no-cache, which the commands that
// open a remote repository honour.
func addCacheFlags(fs *flag.FlagSet, e *env) {
	fs.StringVar(&e.cacheDir, "cache-dir", "", "keep a remote repository's index files and tree packs under `DIR` (default $XDG_CACHE_HOME/diskpoint or ~/.cache/diskpoint)")
	fs.BoolVar(&e.noCache, "no-cache", false, "read a remote repository without the local cache")
}

// openLocation opens the repository at repo with cred.
func openLocation(ctx context.Context, e *env, repo string, cred chain.Credential) (*snapshot.Repository, error) {
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
	store = withCache(ctx, e, store)
	r, err := snapshot.OpenStoreWithCredential(ctx, store, cred)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("repository %s: %w", loc, err)
	}
	return r, nil
}

// withCache returns store read through its cache directory, or store
// itself with -no-cache. A cache that cannot be set up is worth a warning,
// not a failure: the repository reads the same without it.
func withCache(ctx context.Context, e *env, store chain.Store) chain.Store {
	if e.noCache {
		return store
	}
	base := e.cacheDir
	if base == "" {
		var err error
		if base, err = cachestore.DefaultBase(); err != nil {
			fmt.Fprintf(e.stderr, "diskpoint: no cache: %v\n", err)
			return store
		}
	}
	dir, err := cachestore.RepositoryDir(ctx, store, base)
	if err != nil {
		if !errors.Is(err, chain.ErrNotFound) { // no repository: opening says so
			fmt.Fprintf(e.stderr, "diskpoint: no cache: %v\n", err)
		}
		return store
	}
	cached, err := cachestore.New(store, cachestore.Options{Dir: dir})
	if err != nil {
		fmt.Fprintf(e.stderr, "diskpoint: no cache: %v\n", err)
		return store
	}
	return cached
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
