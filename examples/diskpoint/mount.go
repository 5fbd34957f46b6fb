package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/diskpoint/diskpoint/snapshot"
)

// runMount mounts the repository's restore points read-only with FUSE
// (snapshot.Mount) and serves them until SIGINT or SIGTERM, or until the
// file system is unmounted from outside (fusermount3 -u MOUNTPOINT).
func runMount(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
	repoDir := fs.String("repo", "", repoFlagUsage)
	allowOther := fs.Bool("allow-other", false, "let users other than the one who mounts read the file system")
	if err := parse(fs, args, map[string]*string{"repo": repoDir}); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"give one MOUNTPOINT (an empty directory)"}
	}
	dir := fs.Arg(0)
	repo, err := openRepository(ctx, e, *repoDir)
	if err != nil {
		return err
	}
	defer repo.Close()
	m, err := snapshot.Mount(ctx, repo, dir, snapshot.MountOptions{Logger: e.logger(), AllowOther: *allowOther})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "mounted %d restore points of %s read-only at %s (COLLECTION/POINT/DISK.img); Ctrl-C or fusermount3 -u %s unmounts\n", m.Points(), *repoDir, dir, dir)
	select {
	case <-m.Done():
		fmt.Fprintf(e.stdout, "%s was unmounted\n", dir)
		return nil
	case <-ctx.Done():
	}
	if err := m.Unmount(); err != nil {
		// Open files keep it busy: take it out of the tree now, and end
		// when they are closed.
		if err := m.Detach(); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s; detached it: it ends when the files open in it are closed\n", oneLine(err.Error()))
		m.Wait()
	}
	fmt.Fprintf(e.stdout, "unmounted %s\n", dir)
	return nil
}
