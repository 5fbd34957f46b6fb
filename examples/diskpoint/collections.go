package main

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/diskpoint/diskpoint/snapshot"
)

func runCollections(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
	repoDir := fs.String("repo", "", repoFlagUsage)
	asJSON := fs.Bool("json", false, "print a JSON array")
	if err := parse(fs, args, map[string]*string{"repo": repoDir}); err != nil {
		return err
	}
	repo, err := openRepository(ctx, e, *repoDir)
	if err != nil {
		return err
	}
	defer repo.Close()
	names, err := repo.Collections(ctx)
	if err != nil {
		return err
	}
	type collection struct {
		Name          string    `json:"name"`
		RestorePoints int       `json:"restore_points"`
		Newest        time.Time `json:"newest"`
		NewestID      string    `json:"newest_id"`
	}
	out := make([]collection, 0, len(names))
	for _, name := range names {
		c, err := repo.Collection(name)
		if err != nil {
			return err
		}
		points, err := c.List(ctx)
		if err != nil {
			return err
		}
		if len(points) == 0 {
			continue // its last point was deleted since the names were read
		}
		newest := points[len(points)-1]
		out = append(out, collection{Name: name, RestorePoints: len(points), Newest: newest.Created, NewestID: newest.ID})
	}
	if *asJSON {
		return printJSON(e, out)
	}
	tw := tabwriter.NewWriter(e.stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "COLLECTION\tPOINTS\tNEWEST\tCREATED")
	for _, c := range out {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", c.Name, c.RestorePoints, c.NewestID, c.Newest.Local().Format("2006-01-02 15:04:05 MST"))
	}
	return tw.Flush()
}

// mustBeUsed fails for a collection that has never been used: listing a
// mistyped name should say so, not print an empty table.
func mustBeUsed(ctx context.Context, c *snapshot.Collection, repoDir string) error {
	used, err := c.Used(ctx)
	if err != nil {
		return err
	}
	if !used {
		return fmt.Errorf("collection %q in repository %s: %w (diskpoint collections lists them)", c.Name(), repoDir, snapshot.ErrNotFound)
	}
	return nil
}
