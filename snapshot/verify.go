package snapshot

import (
	"context"

	"github.com/diskpoint/diskpoint/chain"
)

// VerifyOptions configure Verify. The zero value reads and checks
// everything.
type VerifyOptions struct {
	// StructureOnly reads no chunk data, as restic check without
	// --read-data: it checks the index files, that every pack the index
	// names exists, and every block map down to its chunks' index entries,
	// but not the chunks' bytes. Fast; it cannot see a flipped bit.
	StructureOnly bool
	// ReadData, if set, reads the data of only these packs (restic check
	// --read-data-subset); the structure is checked in full. It excludes
	// StructureOnly.
	ReadData *DataSubset
	// Progress, if set, is called with the pack bytes read so far and the
	// total.
	Progress func(done, total int64)
}

// DataSubset picks the packs whose data a Verify reads: Group of Groups
// (the packs split into Groups fixed groups by ID, so verifying 1/7 through
// 7/7 on seven days reads everything once), or Percent of them, chosen at
// random each time. ParseDataSubset reads one from "N/M" or "P%".
type DataSubset = chain.DataSubset

// ParseDataSubset reads "N/M" or "P%", as restic check --read-data-subset.
func ParseDataSubset(s string) (DataSubset, error) { return chain.ParseDataSubset(s) }

// Verify reads the repository and checks it: every pack's blobs decompress
// and hash to their IDs (unless opts say to read less), every index file
// matches its name, and every restore point's block maps reach only blobs
// that are there and sound. The report names each damaged object and the
// restore points that need it; an error means Verify itself could not run
// (see chain.Repository.Verify for how it shares the repository).
func (r *Repository) Verify(ctx context.Context, opts VerifyOptions) (chain.VerifyReport, error) {
	return r.chain.Verify(ctx, opts.chain())
}

// chain is the options as the storage layer takes them.
func (o VerifyOptions) chain() chain.VerifyOptions {
	return chain.VerifyOptions{StructureOnly: o.StructureOnly, ReadData: o.ReadData, Progress: o.Progress}
}
