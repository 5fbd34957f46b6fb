package chain

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
)

// indexReadCounter counts the ranged reads of index files.
type indexReadCounter struct {
	Store
	reads atomic.Int64
}

func (s *indexReadCounter) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if strings.HasPrefix(name, indexPrefix) {
		s.reads.Add(1)
	}
	return s.Store.ReadAt(ctx, name, p, off)
}

// ReadBlobs of a version 2 repository looks its blobs up in one sorted
// batch: a read of the index file per run of buckets, not per blob, and
// every blob still comes back whole and checked.
func TestReadBlobsLooksUpAVersion2BatchTogether(t *testing.T) {
	ctx := context.Background()
	store := &indexReadCounter{Store: NewMemStore()}
	repo := newRepositoryOfVersion(t, store, FormatVersion2)
	w, err := repo.NewWriter(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	const n = 5000
	ids := make([]ID, n)
	data := make([][]byte, n)
	for i := range ids {
		data[i] = fmt.Appendf(nil, "blob %d", i)
		ids[i] = repo.HashBlob(data[i])
		if _, err := w.PutBlob(ctx, DataBlob, ids[i], data[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	w.Close()

	fresh, err := Open(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := fresh.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	store.reads.Store(0)
	seen := 0
	err = fresh.ReadBlobs(ctx, DataBlob, ids, nil, func(i int, got []byte) error {
		if string(got) != string(data[i]) {
			return fmt.Errorf("blob %d: %q, want %q", i, got, data[i])
		}
		seen++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != n {
		t.Fatalf("%d blobs read of %d", seen, n)
	}
	reads := store.reads.Load()
	t.Logf("%d blobs: %d reads of index files", n, reads)
	if reads > n/20 {
		t.Errorf("%d reads of index files for %d blobs: looked up one at a time", reads, n)
	}
}
