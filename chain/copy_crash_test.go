package chain

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// crashLayout is a repository and a disk in which one leaf node fills a tree
// pack while the chunks it names, small ones, are still in the open data
// pack: a leaf of crashFanout IDs is 1 MiB, its chunks 8 bytes each.
const (
	crashFanout   = 1 << 15
	crashLeaf1    = 3 // blocks in the second, last leaf
	crashPackSize = 1 << 20
)

func crashConfig(t testing.TB) Config {
	cfg, err := NewTestConfig(0)
	if err != nil {
		t.Fatal(err)
	}
	cfg.TreeFanout, cfg.PackSize = crashFanout, crashPackSize
	return cfg
}

// crashDisk returns the chunks of the disk (all distinct) and its geometry.
func crashDisk(cfg Config) ([]ID, map[ID][]byte, Geometry) {
	n := crashFanout + crashLeaf1
	ids := make([]ID, n)
	data := map[ID][]byte{}
	for i := range ids {
		b := binary.LittleEndian.AppendUint64(nil, uint64(i)+1)
		ids[i] = Hash(b)
		data[ids[i]] = b
	}
	return ids, data, Geometry{Size: int64(n) * int64(cfg.BlockSize), BlockSize: cfg.BlockSize, Fanout: cfg.TreeFanout}
}

// putLeaves puts the chunks and the leaf nodes of leaves [from, to) as a
// create does, chunks before the leaf that names them.
func putLeaves(ctx context.Context, w *Writer, b *TreeBuilder, ids []ID, data map[ID][]byte, from, to int64) error {
	g := b.g
	for j := from; j < to; j++ {
		leaf := ids[j*int64(g.Fanout) : j*int64(g.Fanout)+int64(g.LeafBlocks(j))]
		for _, id := range leaf {
			if _, err := w.PutBlob(ctx, DataBlob, id, data[id]); err != nil {
				return err
			}
		}
		if err := b.AddLeaf(ctx, leaf); err != nil {
			return err
		}
	}
	return nil
}

// writeUntilCheckpoint runs the create that crashes: it puts the first leaf,
// whose node fills the tree pack, and waits for the pack writes and the
// index checkpoints they make. It returns the writer, never flushed.
func writeUntilCheckpoint(ctx context.Context, repo *Repository) (*Writer, error) {
	ids, data, g := crashDisk(repo.config)
	w, err := repo.NewWriter(ctx, "create")
	if err != nil {
		return nil, err
	}
	if err := putLeaves(ctx, w, NewTreeBuilder(w, g), ids, data, 0, 1); err != nil {
		return nil, err
	}
	w.writes.Wait()
	if err := w.failed(); err != nil {
		return nil, err
	}
	return w, nil
}

// crashSource is a repository holding the whole disk as restore point vm/p1.
func crashSource(t *testing.T, cfg Config) (*Repository, *Manifest) {
	t.Helper()
	ctx := context.Background()
	src, err := Init(ctx, NewMemStore(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids, data, g := crashDisk(cfg)
	w, err := src.NewWriter(ctx, "create")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	b := NewTreeBuilder(w, g)
	if err := putLeaves(ctx, w, b, ids, data, 0, g.Leaves()); err != nil {
		t.Fatal(err)
	}
	root, err := b.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := &Manifest{Collection: "vm", ID: "p1", Consistency: "crash",
		Disks: []DiskManifest{{Name: "disk", Size: g.Size, BlockSize: g.BlockSize, Root: root}}}
	if err := w.SaveManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	return src, m
}

// copyAndCheck copies m from src into the repository in store (reopened, as
// after the crash), commits it, and checks that the copy is whole.
func copyAndCheck(t *testing.T, src *Repository, m *Manifest, store Store) {
	t.Helper()
	ctx := context.Background()
	dst, err := Open(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	w, err := dst.NewWriter(ctx, "copy")
	if err != nil {
		t.Fatal(err)
	}
	c := &Copier{From: src, To: w}
	if err := c.CopyDisk(ctx, m.Disks[0]); err != nil {
		t.Fatal(err)
	}
	copied := *m
	copied.Collection = "copy"
	if err := w.SaveManifest(ctx, &copied); err != nil {
		t.Fatal(err)
	}
	w.Close()
	report, err := dst.Verify(ctx, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !report.OK() {
		for i, d := range report.Damage {
			if i == 3 {
				t.Errorf("and %d more", len(report.Damage)-i)
				break
			}
			t.Errorf("verify after the copy: %s: %s (%d chunks)", d.Object, d.Reason, len(d.DataBlobs))
		}
		t.FailNow()
	}
	// Every chunk reads back, through a repository opened afresh.
	fresh, err := Open(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids, data, _ := crashDisk(fresh.config)
	tr := fresh.OpenTree(copied.Disks[0])
	var leaf []ID
	for j := range tr.Geometry().Leaves() {
		if leaf, err = tr.Leaf(ctx, j, leaf[:0]); err != nil {
			t.Fatal(err)
		}
		for k, id := range leaf {
			if want := ids[j*crashFanout+int64(k)]; id != want {
				t.Fatalf("leaf %d block %d: %s, want %s", j, k, id.Short(), want.Short())
			}
			if b, err := fresh.ReadBlob(ctx, DataBlob, id, nil); err != nil || string(b) != string(data[id]) {
				t.Fatalf("leaf %d block %d: %q, %v", j, k, b, err)
			}
		}
	}
}

// checkpointEveryPack makes writers write an index file after every pack,
// for the duration of the test.
func checkpointEveryPack(t *testing.T) {
	saved := indexCheckpointPacks
	indexCheckpointPacks = 1
	t.Cleanup(func() { indexCheckpointPacks = saved })
}

// A create crashes right after an index checkpoint; a copy into that
// repository must still commit a whole restore point. Copier skips every
// subtree whose node the target holds, so a checkpoint (or a pack Open
// recovers from its header) must never hold a tree node whose chunks were
// still in an unwritten data pack.
func TestCopyIntoRepositoryCrashedAfterCheckpoint(t *testing.T) {
	checkpointEveryPack(t)
	ctx := context.Background()
	cfg := crashConfig(t)
	src, m := crashSource(t, cfg)

	store := NewMemStore()
	repo, err := Init(ctx, store, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	w, err := writeUntilCheckpoint(ctx, repo)
	if err != nil {
		t.Fatal(err)
	}
	if !storesTreeBlob(t, store) {
		t.Fatal("the create stored no tree pack before the crash: the test does not test anything")
	}
	// The crash: the store keeps what was Put, the process's memory goes.
	// (The lock is released so that its refresher stops; a crashed
	// process's shared lock would go stale and blocks no copy either way.)
	w.mu.Lock()
	for typ, p := range w.open {
		if p != nil {
			p.buf.release()
			w.open[typ] = nil
		}
	}
	w.mu.Unlock()
	w.lock.unlock()

	copyAndCheck(t, src, m, store)
}

// storesTreeBlob reports whether a pack in store holds a tree blob, as
// Open would find it (from an index file or the pack's own header).
func storesTreeBlob(t *testing.T, store Store) bool {
	t.Helper()
	state, err := loadIndexState(context.Background(), store, testFormat(), discardLogger)
	if err != nil {
		t.Fatal(err)
	}
	for _, entries := range state.entries {
		for _, e := range entries {
			if e.Type == TreeBlob {
				return true
			}
		}
	}
	return false
}

const crashChildEnv = "DISKPOINT_TEST_CRASH_WRITER_DIR"

// The same with a real crash: a child process writes into a LocalStore and
// is killed (SIGKILL) right after its index checkpoint.
func TestCopyIntoRepositoryKilledAfterCheckpoint(t *testing.T) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashWriterChild(dir)
		return
	}
	if testing.Short() {
		t.Skip("runs a child process")
	}
	ctx := context.Background()
	cfg := crashConfig(t)
	src, m := crashSource(t, cfg)

	dir := t.TempDir()
	store, err := NewLocalStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Init(ctx, store, cfg, nil); err != nil {
		t.Fatal(err)
	}
	child := exec.Command(os.Args[0], "-test.run=^TestCopyIntoRepositoryKilledAfterCheckpoint$")
	child.Env = append(os.Environ(), crashChildEnv+"="+dir)
	child.Stderr = os.Stderr
	stdin, err := child.StdinPipe() // the child waits on it to be killed
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	child.Process.Kill()
	child.Wait()
	if !strings.HasPrefix(line, "checkpointed") {
		t.Fatalf("the child writer did not reach its checkpoint: %q, %v", line, err)
	}
	if !storesTreeBlob(t, store) {
		t.Fatal("the child stored no tree pack before it was killed: the test does not test anything")
	}
	copyAndCheck(t, src, m, store)
}

// crashWriterChild is the child of TestCopyIntoRepositoryKilledAfterCheckpoint.
func crashWriterChild(dir string) {
	indexCheckpointPacks = 1
	ctx := context.Background()
	err := func() error {
		store, err := NewLocalStore(dir)
		if err != nil {
			return err
		}
		repo, err := Open(ctx, store, nil)
		if err != nil {
			return err
		}
		_, err = writeUntilCheckpoint(ctx, repo)
		return err
	}()
	if err != nil {
		fmt.Printf("failed: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("checkpointed")
	bufio.NewReader(os.Stdin).ReadString('\n') // until killed
	os.Exit(0)
}
