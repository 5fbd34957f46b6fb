package snapshot

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/diskpoint/diskpoint/chain"
)

// SpaceStats says how much room a set of restore points takes, as restic
// stats and borg info do.
type SpaceStats struct {
	RestorePoints int `json:"restore_points"`
	// LogicalBytes is the size of their disks, summed over the points: what
	// restoring every disk of every point would write.
	LogicalBytes int64 `json:"logical_bytes"`
	// StoredBytes is what the distinct chunks and block-map nodes they need
	// take in packs (compressed, and encrypted if the repository is).
	StoredBytes int64 `json:"stored_bytes"`
	// FreedIfDeleted is the part of StoredBytes nothing else needs: what
	// deleting these points, then running GC, would free (about: GC keeps
	// a pack whose live share is high, and frees its dead bytes later).
	FreedIfDeleted int64 `json:"freed_if_deleted"`
	// DedupRatio is LogicalBytes / StoredBytes: how many bytes of disk each
	// stored byte holds, thanks to deduplication, zero blocks and
	// compression together (0 when nothing is stored).
	DedupRatio float64 `json:"dedup_ratio"`
	// Chunks counts the distinct data chunks they need, and Packs the packs
	// that hold what they need.
	Chunks int `json:"chunks"`
	Packs  int `json:"packs"`
}

// PointStats is SpaceStats for one restore point.
type PointStats struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	// AddedBytes is what the point added to the repository when it was
	// created (its disks' StoredBytes): chunks and nodes that were new then.
	AddedBytes int64 `json:"added_bytes"`
	SpaceStats
}

// CollectionStats is SpaceStats for a collection, and for each of its points.
type CollectionStats struct {
	Name string `json:"name"`
	SpaceStats
	Points []PointStats `json:"points"` // oldest first; never nil
}

// RepositoryStats is SpaceStats for the whole repository, per collection
// and per restore point.
type RepositoryStats struct {
	SpaceStats
	// PackFiles and PackBytes are what the store holds in packs, garbage
	// that GC would reclaim included.
	PackFiles int   `json:"pack_files"`
	PackBytes int64 `json:"pack_bytes"`
	// DamagedPoints counts the restore points whose manifest is damaged:
	// they are not counted above, and what only they need counts as
	// needed by nothing (verify names them).
	DamagedPoints int `json:"damaged_points"`
	// MissingBlobs counts the blobs the points need that the index lacks
	// (damage verify reports); they count as 0 bytes.
	MissingBlobs int               `json:"missing_blobs"`
	Collections  []CollectionStats `json:"collections"` // sorted by name; never nil
}

// StatsOptions tunes Stats.
type StatsOptions struct {
	// Collection, if set, limits the report's Collections to this one. What
	// its points would free is still reckoned against every restore point
	// of the repository.
	Collection string
	// Progress, if set, is called after each restore point is walked, with
	// the number walked and the total.
	Progress func(done, total int)
}

// blobUse is what Stats knows of one blob: its stored size and pack, and
// which points and collections need it (the last one seen, and how many,
// counted up to 2: "more than one" is all that matters).
type blobUse struct {
	size          uint32
	pack          int32 // -1: not in the index
	lastPoint     int32
	lastColl      int32
	points, colls uint8
	data          bool
}

// statsTally is a SpaceStats being counted, with the packs seen so far.
type statsTally struct {
	*SpaceStats
	packs map[int32]bool
}

func newTally(s *SpaceStats) statsTally { return statsTally{s, map[int32]bool{}} }

// add counts blob u into t.
func (t statsTally) add(u *blobUse) {
	t.StoredBytes += int64(u.size)
	if u.data {
		t.Chunks++
	}
	if u.pack >= 0 && !t.packs[u.pack] {
		t.packs[u.pack] = true
		t.Packs++
	}
}

func (t statsTally) finish() {
	if t.StoredBytes > 0 {
		t.DedupRatio = float64(t.LogicalBytes) / float64(t.StoredBytes)
	}
}

// Stats walks every restore point's block maps and reports, for the
// repository, each collection and each point, the logical size, the stored
// size, what deleting would free, the dedup ratio and the chunks and packs
// needed. It reads every block-map node of every point, and holds a few
// dozen bytes per distinct blob in memory.
func (r *Repository) Stats(ctx context.Context, opts StatsOptions) (RepositoryStats, error) {
	rs := RepositoryStats{Collections: []CollectionStats{}}
	if err := r.chain.LoadIndex(ctx); err != nil { // sizes and packs come from it
		return rs, fmt.Errorf("stats: %w", err)
	}
	names, err := r.chain.ListCollections(ctx)
	if err != nil {
		return rs, fmt.Errorf("stats: %w", err)
	}
	if opts.Collection != "" && !slices.Contains(names, opts.Collection) {
		return rs, fmt.Errorf("stats: collection %q has no restore points: %w", opts.Collection, ErrNotFound)
	}
	if err := r.chain.Store().List(ctx, "packs/", func(info chain.ObjectInfo) error {
		rs.PackFiles++
		rs.PackBytes += info.Size
		return nil
	}); err != nil {
		return rs, fmt.Errorf("stats: list packs: %w", err)
	}
	colls := make([]CollectionStats, len(names))
	var manifests [][]*chain.Manifest
	total := 0
	for i, name := range names {
		listed, err := r.chain.ListManifestsWithDamaged(ctx, name)
		if err != nil {
			return rs, fmt.Errorf("stats: %w", err)
		}
		var ms []*chain.Manifest
		for _, l := range listed {
			if l.Damage != nil {
				rs.DamagedPoints++
				continue
			}
			ms = append(ms, l.Manifest)
		}
		colls[i] = CollectionStats{Name: name, Points: make([]PointStats, len(ms))}
		manifests = append(manifests, ms)
		total += len(ms)
	}

	uses := map[chain.ID]*blobUse{}
	packNums := map[string]int32{}
	repoTally := newTally(&rs.SpaceStats)
	var points []*PointStats // every point, numbered as lastPoint counts them
	done := 0
	for ci := range colls {
		c := &colls[ci]
		collTally := newTally(&c.SpaceStats)
		for pi, m := range manifests[ci] {
			p := &c.Points[pi]
			*p = PointStats{ID: m.ID, Created: m.Created}
			pointNum := int32(len(points))
			points = append(points, p)
			pointTally := newTally(&p.SpaceStats)
			visit := func(id chain.ID, data bool) {
				u, ok := uses[id]
				if !ok {
					u = &blobUse{pack: -1, lastPoint: -1, lastColl: -1, data: data}
					if loc, found := r.chain.LocateBlob(id); found {
						u.size = uint32(loc.Length)
						num, known := packNums[loc.Pack]
						if !known {
							num = int32(len(packNums))
							packNums[loc.Pack] = num
						}
						u.pack = num
					} else {
						rs.MissingBlobs++
					}
					uses[id] = u
					repoTally.add(u)
				}
				if u.lastPoint != pointNum {
					u.lastPoint = pointNum
					u.points = min(u.points+1, 2)
					pointTally.add(u)
				}
				if u.lastColl != int32(ci) {
					u.lastColl = int32(ci)
					u.colls = min(u.colls+1, 2)
					collTally.add(u)
				}
			}
			if !m.Config.IsZero() {
				visit(m.Config, true)
			}
			seen := map[chain.ID]bool{}
			for _, d := range m.Disks {
				p.LogicalBytes += d.Size
				p.AddedBytes += d.StoredBytes
				err := r.chain.OpenTree(d).WalkNodes(ctx, seen, func(id chain.ID, level int, ids []chain.ID) error {
					visit(id, false)
					if level == 0 {
						for _, b := range ids {
							if !b.IsZero() {
								visit(b, true)
							}
						}
					}
					return nil
				})
				if err != nil {
					return rs, fmt.Errorf("stats: restore point %s/%s disk %s: %w", c.Name, m.ID, d.Name, err)
				}
			}
			p.RestorePoints = 1
			c.RestorePoints++
			c.LogicalBytes += p.LogicalBytes
			rs.RestorePoints++
			rs.LogicalBytes += p.LogicalBytes
			done++
			if opts.Progress != nil {
				opts.Progress(done, total)
			}
		}
	}
	for _, u := range uses {
		if u.points == 1 {
			points[u.lastPoint].FreedIfDeleted += int64(u.size)
		}
		if u.colls == 1 {
			colls[u.lastColl].FreedIfDeleted += int64(u.size)
		}
	}
	rs.FreedIfDeleted = rs.StoredBytes
	for ci := range colls {
		for pi := range colls[ci].Points {
			newTally(&colls[ci].Points[pi].SpaceStats).finish()
		}
		newTally(&colls[ci].SpaceStats).finish()
		if opts.Collection == "" || colls[ci].Name == opts.Collection {
			rs.Collections = append(rs.Collections, colls[ci])
		}
	}
	repoTally.finish()
	return rs, nil
}
