package chain_test

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"syscall"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/chain/storetest"
)

// A version 2 index is read as blobs are looked up. A lookup whose read
// fails is that failure, not a missing blob: a read reports the store's
// error (not damage), and a writer fails rather than store a blob again.
func TestVersion2LookupFailuresPropagate(t *testing.T) {
	ctx := context.Background()
	mem := chain.NewMemStore()
	cfg, err := chain.NewConfig(0)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Version, cfg.TreeFanout, cfg.PackSize = chain.FormatVersion2, 4, 1<<20
	repo, err := chain.Init(ctx, mem, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids, data := randomBlocks(rand.New(rand.NewPCG(21, 21)), 30, 0)
	commit(t, repo, "p1", ids, data)

	faulty := storetest.NewFaultStore(mem, 1)
	opened, err := chain.Open(ctx, faulty, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := opened.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	faulty.Inject(storetest.Fault{Op: storetest.OpReadAt, Prefix: "index/", Err: syscall.EIO})
	_, err = opened.ReadBlob(ctx, chain.DataBlob, ids[0], nil)
	if !errors.Is(err, syscall.EIO) || errors.Is(err, chain.ErrCorrupt) {
		t.Errorf("read while the index cannot be read: %v; want EIO, not damage", err)
	}
	w, err := opened.NewWriter(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if n, err := w.PutBlob(ctx, chain.DataBlob, ids[0], data[ids[0]]); !errors.Is(err, syscall.EIO) {
		t.Errorf("put of a stored blob while the index cannot be read: %d bytes, %v; want EIO", n, err)
	}
}

// A version 2 index file damaged past its tables (a bucket) opens, and a
// lookup in that bucket fails. GC reads every file through before it marks:
// it takes such a file for damaged, recovers its packs from their headers,
// and writes a sound index without it, so that nothing is lost.
func TestVersion2GCReplacesADamagedBucket(t *testing.T) {
	ctx := context.Background()
	mem, m := damagedBucketRepository(t)
	opened, err := chain.Open(ctx, mem, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := opened.GC(ctx, chain.GCOptions{}); err != nil {
		t.Fatalf("gc over a damaged bucket: %v", err)
	}
	// The index GC wrote is sound (a file it rewrote byte for byte, in the
	// same second, has the damaged file's name, and replaces it).
	for object := range listIndex(t, mem) {
		b, err := mem.Get(ctx, object)
		if err != nil {
			t.Fatal(err)
		}
		if "index/"+chain.Hash(b).String() != object {
			t.Errorf("after gc, %s does not match its name", object)
		}
	}

	if err := readAll(t, opened, m); err != nil {
		t.Fatalf("read after gc: %v", err)
	}
	fresh, err := chain.Open(ctx, mem, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := readAll(t, fresh, m); err != nil {
		t.Fatalf("read after gc, freshly opened: %v", err)
	}
	report, err := fresh.Verify(ctx, chain.VerifyOptions{})
	if err != nil || !report.OK() || report.UnindexedPacks != 0 {
		t.Errorf("verify after gc: %+v, %v; want no damage and every pack indexed", report, err)
	}
}

// damagedBucketRepository makes a version 2 repository of one restore
// point whose one index file has its first entry damaged (a bucket whose
// checksum fails; the tables are sound, so the file opens). It returns
// the store and the restore point.
func damagedBucketRepository(t *testing.T) (*chain.MemStore, *chain.Manifest) {
	t.Helper()
	ctx := context.Background()
	mem := chain.NewMemStore()
	cfg, err := chain.NewConfig(0)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Version, cfg.TreeFanout, cfg.PackSize = chain.FormatVersion2, 4, 1<<20
	repo, err := chain.Init(ctx, mem, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids, data := randomBlocks(rand.New(rand.NewPCG(22, 22)), 30, 0)
	m := commit(t, repo, "p1", ids, data)
	names := listIndex(t, mem)
	if len(names) != 1 {
		t.Fatalf("%d index files, want 1", len(names))
	}
	var name string
	for name = range names {
	}
	file, err := mem.Get(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	// The first entry's blob ID: past the header, fanout, checksums and packs.
	entries := 24 + 8*int(1<<file[6]) + 32*int(binary.LittleEndian.Uint32(file[12:]))
	file[entries] ^= 0x01
	if err := mem.Put(ctx, name, file); err != nil {
		t.Fatal(err)
	}
	return mem, m
}

// Reads and writes over an index file damaged past its tables go on, as
// they do over a damaged version 1 index file: the file is set aside and
// its packs are recovered from their own headers.
func TestVersion2DamagedBucketIsSetAside(t *testing.T) {
	ctx := context.Background()
	mem, m := damagedBucketRepository(t)
	opened, err := chain.Open(ctx, mem, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := readAll(t, opened, m); err != nil {
		t.Fatalf("read over a damaged bucket: %v", err)
	}
	writer, err := chain.Open(ctx, mem, nil)
	if err != nil {
		t.Fatal(err)
	}
	w, err := writer.NewWriter(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// A chunk recovered from its pack's header is found; a tree node so
	// recovered is readable but promises nothing (FORMAT.md), so a writer
	// stores it again.
	leaf, err := opened.OpenTree(m.Disks[0]).Leaf(ctx, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	chunk := leaf[0]
	data, err := opened.ReadBlob(ctx, chain.DataBlob, chunk, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := w.PutBlob(ctx, chain.DataBlob, chunk, data); err != nil || n != 0 {
		t.Errorf("put of a stored chunk over a damaged bucket: %d bytes, %v; want it found (0 bytes)", n, err)
	}
	root := m.Disks[0].Root
	if data, err = opened.ReadBlob(ctx, chain.TreeBlob, root, nil); err != nil {
		t.Fatal(err)
	}
	if n, err := w.PutBlob(ctx, chain.TreeBlob, root, data); err != nil || n == 0 {
		t.Errorf("put of a tree node known only from its pack's header: %d bytes, %v; want it stored again", n, err)
	}
}
