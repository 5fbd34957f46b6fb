package blockdiff_test

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/blockdiff"
	"github.com/diskpoint/diskpoint/chain"
)

// gatheringReader holds every read until want reads wait at once (or,
// so that a scan that never gets there fails instead of hanging, until
// give-up), and records the most that ever waited together.
type gatheringReader struct {
	want int
	mu   sync.Mutex
	now  int
	most int
	all  chan struct{} // closed once want reads waited together, or at give-up
	once sync.Once
}

func (g *gatheringReader) ReadAt(p []byte, off int64) (int, error) {
	g.mu.Lock()
	g.now++
	g.most = max(g.most, g.now)
	if g.now >= g.want {
		g.once.Do(func() { close(g.all) })
	}
	g.mu.Unlock()
	<-g.all
	g.mu.Lock()
	g.now--
	g.mu.Unlock()
	clear(p)
	for i := 0; i < len(p); i += bs {
		p[i] = 1 // not a zero block
	}
	return len(p), nil
}

// A reader disk whose reads wait on a peer (an NBD server) says how many
// reads to keep going, and a scan of its changed ranges (a dirty bitmap's)
// with the default workers keeps that many going even on a machine with
// fewer CPUs: the CPUs hash and compress while the short reads wait.
func TestChangedRangeScanKeepsAReaderDisksReadsInFlight(t *testing.T) {
	want := runtime.GOMAXPROCS(0) + 6
	g := &gatheringReader{want: want, all: make(chan struct{})}
	giveUp := time.AfterFunc(30*time.Second, func() { g.once.Do(func() { close(g.all) }) })
	defer giveUp.Stop()
	segments := 4 * want
	size := int64(segments) * segBlocks * bs
	d, err := blockdiff.NewReaderDiskWith("slow peer", g, size, blockdiff.ReaderDiskOptions{ReadsInFlight: want})
	if err != nil {
		t.Fatal(err)
	}
	// The parent's blocks all differ from what the disk reads; one block
	// of every segment changed.
	parent := sliceParent{size: size, ids: make([]chain.ID, size/bs)}
	for i := range parent.ids {
		parent.ids[i] = chain.Hash([]byte{byte(i), byte(i >> 8), 7})
	}
	var changed []blockdiff.Range
	for j := range segments {
		changed = append(changed, blockdiff.Range{Offset: int64(j)*segBlocks*bs + bs, Length: 100})
	}
	var mu sync.Mutex
	stored := 0
	_, err = blockdiff.Scan(context.Background(), d, blockdiff.Options{
		BlockSize: bs, SegmentBlocks: segBlocks, // Workers 0: the default
		Parent: parent, ChangedOnly: true, Changed: changed,
		Store: func(context.Context, blockdiff.Block) error {
			mu.Lock()
			stored++
			mu.Unlock()
			return nil
		},
		Segment: func(context.Context, blockdiff.Segment) error { return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if g.most < want {
		t.Fatalf("at most %d reads were in flight at once; the disk asked for %d (GOMAXPROCS %d)", g.most, want, runtime.GOMAXPROCS(0))
	}
	if stored != segments {
		t.Fatalf("%d blocks stored, want the %d changed", stored, segments)
	}
}
