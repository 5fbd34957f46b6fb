package snapshot

import (
	"context"
	"errors"
	"time"

	"github.com/diskpoint/diskpoint/chain"
)

// ListedPoint is one restore point as ListWithDamaged found it. A damaged
// one (its manifest cannot be read) has only ID, Collection, Damaged and
// DamageReason: its RestorePoint is nil, so check Damaged before reading
// anything else.
type ListedPoint struct {
	ID         string `json:"id"`
	Collection string `json:"collection"`
	*RestorePoint
	// Damaged: the manifest is damaged; DamageReason says how, and Stored
	// is when the store says it was written (its creation time is lost).
	Damaged      bool      `json:"damaged,omitempty"`
	DamageReason string    `json:"damage_reason,omitempty"`
	Stored       time.Time `json:"stored,omitzero"`
}

// ListWithDamaged returns the collection's restore points, oldest first,
// with the damaged ones marked rather than left out: what an operator's
// listing shows, so that a damaged point is seen (and verify, a copy of the
// manifest, or delete can deal with it).
func (c *Collection) ListWithDamaged(ctx context.Context) ([]ListedPoint, error) {
	listed, err := c.repo.chain.ListManifestsWithDamaged(ctx, c.name)
	if err != nil {
		return nil, err
	}
	out := make([]ListedPoint, len(listed))
	for i, l := range listed {
		p := ListedPoint{ID: l.ID, Collection: c.name}
		if l.Damage != nil {
			p.Damaged, p.DamageReason, p.Stored = true, damageReason(l.Damage), l.Stored
		} else {
			p.RestorePoint = pointFromManifest(l.Manifest)
		}
		out[i] = p
	}
	return out, nil
}

// damageReason is what err says is wrong, without the object's name, which
// the listing shows already.
func damageReason(err error) string {
	if ce, ok := errors.AsType[*chain.CorruptError](err); ok {
		return ce.Reason
	}
	return err.Error()
}
