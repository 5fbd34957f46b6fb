package snapshot

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// RetentionPolicy says which restore points to keep; Prune deletes the
// rest. Every rule keeps points on its own; a point kept by any is kept.
// The calendar rules keep the newest point of each of their last N buckets
// that have a point, as restic's --keep-* options do.
type RetentionPolicy struct {
	Last    int // the newest Last restore points
	Hourly  int // the newest point in each of the last Hourly hours that have one
	Daily   int // likewise per day
	Weekly  int // per ISO week
	Monthly int // per month
	Yearly  int // per year
	// Within keeps every point created less than Within before the newest
	// point (not before now: a collection nobody adds to keeps its last
	// points however old they are).
	Within time.Duration
	// Location is the time zone whose hours, days, weeks, months and years
	// are the buckets; nil means time.Local, so that "daily" means the
	// operator's days.
	Location *time.Location
}

// IsEmpty reports whether the policy has no rule, and so would keep nothing.
func (p RetentionPolicy) IsEmpty() bool {
	return p.Last == 0 && p.Hourly == 0 && p.Daily == 0 && p.Weekly == 0 && p.Monthly == 0 && p.Yearly == 0 && p.Within == 0
}

// PruneResult lists what a prune kept, with the rules that kept it, and
// what it deleted (or, in a dry run, would delete). Both are newest first.
type PruneResult struct {
	DryRun  bool          `json:"dry_run"`
	Kept    []PrunedPoint `json:"kept"`
	Deleted []PrunedPoint `json:"deleted"`
}

// PrunedPoint is one restore point in a PruneResult.
type PrunedPoint struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	Reasons []string  `json:"reasons,omitempty"`
}

// PruneOptions configure Prune.
type PruneOptions struct {
	// Policy says which restore points to keep; it must have a rule.
	Policy RetentionPolicy
	// DryRun reports what the policy would delete, and deletes nothing.
	DryRun bool
}

// Prune deletes the restore points opts.Policy does not keep, with their
// hook logs, and reports them; with opts.DryRun it only reports. Run GC
// afterwards to reclaim the space.
func (c *Collection) Prune(ctx context.Context, opts PruneOptions) (PruneResult, error) {
	policy, dryRun := opts.Policy, opts.DryRun
	result := PruneResult{DryRun: dryRun, Kept: []PrunedPoint{}, Deleted: []PrunedPoint{}}
	if policy.IsEmpty() {
		return result, errors.New("prune: the policy keeps nothing; give at least one rule")
	}
	if policy.Last < 0 || policy.Hourly < 0 || policy.Daily < 0 || policy.Weekly < 0 || policy.Monthly < 0 || policy.Yearly < 0 || policy.Within < 0 {
		return result, fmt.Errorf("prune: negative counts in %+v", policy)
	}
	unlock, err := c.repo.chain.LockCollection(ctx, c.name, "prune", 0)
	if err != nil {
		return result, fmt.Errorf("prune %q: %w", c.name, err)
	}
	defer unlock()
	points, err := c.List(ctx)
	if err != nil {
		return result, err
	}
	reasons := keepReasons(points, policy)
	for i := len(points) - 1; i >= 0; i-- {
		rp := points[i]
		p := PrunedPoint{ID: rp.ID, Created: rp.Created, Reasons: reasons[rp.ID]}
		if len(p.Reasons) > 0 {
			result.Kept = append(result.Kept, p)
			continue
		}
		if !dryRun {
			if err := c.Delete(ctx, rp.ID); err != nil {
				return result, err
			}
		}
		result.Deleted = append(result.Deleted, p)
	}
	return result, nil
}

// keepReasons applies the policy to points (oldest first) and returns, for
// each kept point, the rules that keep it.
func keepReasons(points []*RestorePoint, policy RetentionPolicy) map[string][]string {
	reasons := map[string][]string{}
	loc := policy.Location
	if loc == nil {
		loc = time.Local
	}
	rules := []struct {
		name  string
		count int
		key   func(time.Time) string
	}{
		{"last", policy.Last, func(time.Time) string { return "" }}, // every point is its own bucket
		{"hourly", policy.Hourly, func(t time.Time) string { return t.Format("2006-01-02T15") }},
		{"daily", policy.Daily, func(t time.Time) string { return t.Format("2006-01-02") }},
		{"weekly", policy.Weekly, func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%d-W%02d", y, w) }},
		{"monthly", policy.Monthly, func(t time.Time) string { return t.Format("2006-01") }},
		{"yearly", policy.Yearly, func(t time.Time) string { return t.Format("2006") }},
	}
	for _, rule := range rules {
		kept, last := 0, "\x00"
		for i := len(points) - 1; i >= 0 && kept < rule.count; i-- {
			rp := points[i]
			key := rule.key(rp.Created.In(loc))
			if rule.name != "last" && key == last {
				continue // an older point of a bucket already kept
			}
			last = key
			kept++
			reasons[rp.ID] = append(reasons[rp.ID], rule.name)
		}
	}
	if policy.Within > 0 && len(points) > 0 {
		newest := points[len(points)-1].Created
		for _, rp := range points {
			if newest.Sub(rp.Created) < policy.Within {
				reasons[rp.ID] = append(reasons[rp.ID], "within")
			}
		}
	}
	return reasons
}
