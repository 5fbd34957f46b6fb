package chain

import (
	"context"
	"errors"
	"fmt"
	"sort"
)

// Reads of blobs that sit close together in one pack are merged into one
// read of the span that holds them: a restore walks a block map in the
// order a create wrote it, so a leaf's chunks are mostly neighbours.
const (
	maxReadGap  = 256 << 10 // bytes of other blobs worth reading through
	maxReadSpan = 16 << 20
)

// blobWant is one blob a read of many wants: its index in the caller's
// IDs, and where it is stored.
type blobWant struct {
	i    int
	pack ID
	e    packEntry
}

// blobSpan is a run of wants read with one ReadAt: wants[start:end], the
// bytes [off, off+n) of their pack.
type blobSpan struct {
	start, end int
	off, n     int64
}

// ReadBlobs reads the blobs ids of type t, checking each against its ID,
// and calls fn with each one's index in ids and its plaintext, in pack
// order rather than ids order. Zero IDs are skipped. It stops at the first
// error. If into is set, blob i is decoded straight into into(i)'s memory
// (its capacity must hold the blob; DecodeSlack bytes more make decoding
// faster, and may be written to), saving a copy; otherwise the plaintext
// is valid only during the call.
func (r *Repository) ReadBlobs(ctx context.Context, t BlobType, ids []ID, into func(i int) []byte, fn func(i int, data []byte) error) error {
	wants, spans, err := r.planBlobReads(ctx, t, ids)
	if err != nil {
		return err
	}
	fetches := readAhead(blobReadContext(ctx, t), r.store, len(spans), func(k int) (string, int64, int64) {
		return packName(wants[spans[k].start].pack), spans[k].off, spans[k].n
	})
	defer fetches.stop()
	var plain []byte
	for k, sp := range spans {
		spanData, err := fetches.wait(k)
		if err := r.useSpan(ctx, t, wants[sp.start:sp.end], spanData, err, into, &plain, fn); err != nil {
			return err
		}
	}
	return nil
}

// ReadBlobsInParallel is ReadBlobs for reads of many packs' worth of
// blobs, such as a restore's: workers goroutines each read a span of a
// pack and decode its blobs, and fn is called from all of them at once
// (each call's plaintext is valid only during it). Whole packs are then
// read with one request each, where ReadBlobs called per part of a disk
// would read the same pack in many small pieces: on an object store each
// request has a cost of its own, and a server checks whole blocks of its
// own for every ranged read. Each worker holds at most one span
// (maxReadSpan bytes) at a time.
func (r *Repository) ReadBlobsInParallel(ctx context.Context, t BlobType, ids []ID, workers int, fn func(i int, data []byte) error) error {
	wants, spans, err := r.planBlobReads(ctx, t, ids)
	if err != nil {
		return err
	}
	readCtx := blobReadContext(ctx, t)
	return inWorkers(ctx, max(workers, 1), len(spans), func(ctx context.Context) func(k int) error {
		var buf, plain []byte
		return func(k int) error {
			sp := spans[k]
			if int64(cap(buf)) < sp.n {
				buf = make([]byte, sp.n)
			}
			buf = buf[:sp.n]
			err := r.store.ReadAt(readCtx, packName(wants[sp.start].pack), buf, sp.off)
			if ctx.Err() != nil {
				return ctx.Err() // another worker failed
			}
			return r.useSpan(ctx, t, wants[sp.start:sp.end], buf, err, nil, &plain, fn)
		}
	})
}

// blobReadContext is the context of the pack reads of blobs of type t:
// marked for tree packs.
func blobReadContext(ctx context.Context, t BlobType) context.Context {
	if t == TreeBlob {
		return withTreePack(ctx)
	}
	return ctx
}

// planBlobReads finds where the blobs ids of type t are stored and cuts
// them, in pack order, into spans to read.
func (r *Repository) planBlobReads(ctx context.Context, t BlobType, ids []ID) ([]blobWant, []blobSpan, error) {
	idx := r.index()
	wants := make([]blobWant, 0, len(ids))
	// A version 2 index looks the ids up in one sorted batch first: a
	// bucket read per run of buckets, not per blob (a restore of 2 GiB
	// made 22,801 reads of a bucket each). What it does not find goes
	// through find as before.
	var batch map[ID]indexEntry
	if x, ok := idx.(*indexV2Set); ok {
		batch = x.findBatch(ctx, ids)
	}
	for i, id := range ids {
		if id.IsZero() {
			continue
		}
		var e packEntry
		var pack ID
		var ok bool
		var err error
		if found, hit := batch[id]; hit {
			e, pack, ok = found.packEntry, found.Pack, true
		} else {
			e, pack, ok, err = idx.find(ctx, id)
		}
		if err != nil || !ok || e.Type != t {
			// ReadBlob reloads an index that does not list the blob or
			// cannot be read, or gives the precise error.
			if _, err := r.ReadBlob(ctx, t, id, nil); err != nil {
				return nil, nil, err
			}
			idx = r.index()
			if e, pack, ok, err = idx.find(ctx, id); err != nil {
				return nil, nil, fmt.Errorf("%s blob %s: look it up: %w", t, id, err)
			} else if !ok || e.Type != t {
				return nil, nil, fmt.Errorf("%s blob %s: index changed while reading", t, id)
			}
		}
		wants = append(wants, blobWant{i, pack, e})
	}
	sort.Slice(wants, func(a, b int) bool {
		if wants[a].pack != wants[b].pack {
			return string(wants[a].pack[:]) < string(wants[b].pack[:])
		}
		return wants[a].e.Offset < wants[b].e.Offset
	})
	var spans []blobSpan
	for start := 0; start < len(wants); {
		// Extend the span while the next blob is in the same pack, close by.
		first := wants[start]
		end := start + 1
		spanEnd := int64(first.e.Offset) + int64(first.e.Length)
		for end < len(wants) && wants[end].pack == first.pack {
			next := wants[end].e
			if int64(next.Offset)-spanEnd > maxReadGap || int64(next.Offset)+int64(next.Length)-int64(first.e.Offset) > maxReadSpan {
				break
			}
			spanEnd = max(spanEnd, int64(next.Offset)+int64(next.Length))
			end++
		}
		spans = append(spans, blobSpan{start, end, int64(first.e.Offset), spanEnd - int64(first.e.Offset)})
		start = end
	}
	return wants, spans, nil
}

// useSpan decodes the blobs ws of one span from spanData, the span's
// bytes (or readErr, the error reading them), and calls fn with each. A
// span that could not be read whole, or a blob that does not decode, is
// read again blob by blob with ReadBlob, which looks the blob up again and
// names the damage. into is as for ReadBlobs; *plain is the caller's
// buffer for plaintext when into is nil.
func (r *Repository) useSpan(ctx context.Context, t BlobType, ws []blobWant, spanData []byte, readErr error, into func(i int) []byte, plain *[]byte, fn func(i int, data []byte) error) error {
	first := ws[0]
	if readErr != nil {
		object := fmt.Sprintf("%s blob %s in pack %s", t, first.e.ID, first.pack)
		rerr := readError(object, readErr)
		if !errors.Is(rerr, ErrNotFound) && !errors.As(rerr, new(*CorruptError)) {
			// The store failed (EIO, a timeout): no blob's bytes were
			// read, so none is damaged.
			return rerr
		}
		// The pack is gone (a GC elsewhere may have moved its blobs:
		// ReadBlob looks again) or short: read one by one, so that the
		// blobs it still holds are read and the error names the blob.
		for _, w := range ws {
			dst := *plain
			if into != nil {
				dst = into(w.i)
			}
			data, err := r.ReadBlob(ctx, t, w.e.ID, dst)
			if err != nil {
				return err
			}
			if err := fn(w.i, data); err != nil {
				return err
			}
		}
		return nil
	}
	for _, w := range ws {
		off := int64(w.e.Offset) - int64(first.e.Offset)
		dst := *plain
		if into != nil {
			dst = into(w.i)
		}
		data, err := r.decodeStored(dst, spanData[off:off+int64(w.e.Length)], w.e)
		if err != nil {
			// Damaged, or repaired elsewhere since the index was
			// loaded: ReadBlob looks again, and names the damage.
			if data, err = r.ReadBlob(ctx, t, w.e.ID, dst); err != nil {
				return err
			}
		}
		if into == nil {
			*plain = data
		}
		if err := fn(w.i, data); err != nil {
			return err
		}
	}
	return nil
}
