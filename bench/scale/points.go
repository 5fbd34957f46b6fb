package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/snapshot"
	"golang.org/x/sync/errgroup"
)

// makePoints gives the collection of many points its -points restore
// points, and the collection of one its one. The first point of each is a
// real create of the one-block disk. The many collection's others are
// copies of its manifest, as a create of the unchanged disk writes it (the
// same block map, nothing changed or stored, the point before as parent),
// each with its own ID and a time a microsecond after the one before (so
// all are in the past before the next step starts), saved through the
// library, which keeps the heads record as a create does: making them by
// create would take a create each.
func makePoints(ctx context.Context, p params, repo *snapshot.Repository) (string, error) {
	for _, name := range []string{manyCollection, oneCollection} {
		if _, err := create(ctx, repo, name, smallDisk(p)); err != nil {
			return "", err
		}
	}
	cr := repo.Chain()
	listed, err := cr.ListManifests(ctx, manyCollection)
	if err != nil {
		return "", err
	}
	if len(listed) != 1 {
		return "", fmt.Errorf("collection %q has %d points, want 1", manyCollection, len(listed))
	}
	first := listed[0]
	w, err := cr.NewWriter(ctx, "make restore points")
	if err != nil {
		return "", err
	}
	defer w.Close()
	// IDs first (each names the one before as its parent), then the saves,
	// a few at a time: each is a file written and synced.
	manifests := make([]*chain.Manifest, p.points-1)
	prev := first
	used := map[string]bool{first.ID: true}
	for i := range manifests {
		m := *prev
		m.Created = first.Created.Add(time.Duration(i+1) * time.Microsecond)
		for m.ID = pointID(m.Created); used[m.ID]; m.ID = pointID(m.Created) {
		}
		used[m.ID] = true
		if p.pointsStore {
			m.Config = chain.Hash(pointConfig(&m))
		}
		m.Disks = make([]chain.DiskManifest, len(prev.Disks))
		for j, d := range prev.Disks {
			d.Parent = prev.ID
			d.ChangedBytes, d.StoredBytes, d.MetadataBytes, d.NewChunkBytes = 0, 0, 0, 0
			m.Disks[j] = d
		}
		manifests[i] = &m
		prev = &m
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for _, m := range manifests {
		g.Go(func() error {
			if p.pointsStore { // stored and flushed with its point: a pack and an index file each
				if _, err := w.PutBlob(gctx, chain.DataBlob, m.Config, pointConfig(m)); err != nil {
					return err
				}
			}
			return w.SaveManifest(gctx, m)
		})
	}
	if err := g.Wait(); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d points in %q (1 created, %d manifests copied), 1 in %q", p.points, manyCollection, len(manifests), oneCollection), nil
}

// pointConfig is the VM configuration blob of point m, with -points-store:
// one of its own, so that saving the point stores something.
func pointConfig(m *chain.Manifest) []byte {
	return []byte(fmt.Sprintf("configuration of point %s/%s", m.Collection, m.ID))
}

// pointID is an ID as a create makes one: the time to the second, then
// random hex (the caller draws again on a collision: many share a second).
func pointID(t time.Time) string {
	var b [3]byte
	rand.Read(b[:])
	return t.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}
