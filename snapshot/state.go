package snapshot

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/consistency"
)

// collectionState is what a collection remembers between creates, kept in
// the repository so that it survives a restart of the process.
type collectionState struct {
	Fallback consistency.FallbackState `json:"fallback"`
	// Creates holds the times of recent creates per requested mode, and
	// Copies of recent copies into the collection, for rate limits.
	Creates map[consistency.Mode][]time.Time `json:"creates,omitempty"`
	Copies  []time.Time                      `json:"copies,omitempty"`
}

func loadState(ctx context.Context, repo *chain.Repository, collection string) (*collectionState, error) {
	st := &collectionState{}
	data, err := repo.LoadCollectionState(ctx, collection)
	if err != nil || data == nil {
		return st, err
	}
	if err := json.Unmarshal(data, st); err != nil {
		return nil, &chain.CorruptError{Object: "state of collection " + collection, Reason: err.Error()}
	}
	return st, nil
}

func (st *collectionState) save(ctx context.Context, repo *chain.Repository, collection string) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("collection %q state: %w", collection, err)
	}
	return repo.SaveCollectionState(ctx, collection, append(data, '\n'))
}
