package snapshot_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/diskpoint/diskpoint/blockdiff"
	"github.com/diskpoint/diskpoint/snapshot"
)

// The live-write test's disk: guest blocks of 64 KiB (several repository
// blocks each), each holding one of a few states that the writer cycles
// through. Few states, so that a later restore point of the idle disk holds
// content an earlier, busy one also hashed: if a blob were stored under the
// ID of other bytes, dedup would hand it on.
const (
	liveBlock      = 64 << 10
	liveBlocks     = 128 // an 8 MiB disk
	liveStates     = 3
	liveBusyPoints = 20
)

// liveImages returns, for each state s, the whole disk with every guest
// block in state s: pseudo-random words, so that any byte tells the states
// apart and blocks never repeat each other.
func liveImages() [liveStates][]byte {
	var images [liveStates][]byte
	for s := range images {
		images[s] = make([]byte, liveBlocks*liveBlock)
		for w := 0; w < len(images[s]); w += 8 {
			x := uint64(s)<<56 ^ uint64(w) // splitmix64
			x += 0x9e3779b97f4a7c15
			x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
			x = (x ^ x>>27) * 0x94d049bb133111eb
			binary.LittleEndian.PutUint64(images[s][w:], x^x>>31)
		}
	}
	return images
}

// liveState is state s of guest block b.
func liveState(images *[liveStates][]byte, b, s int) []byte {
	return images[s][b*liveBlock : (b+1)*liveBlock]
}

// liveWriter rewrites random guest blocks of a disk image until stopped,
// and records which states each block has had.
type liveWriter struct {
	f      *os.File
	images *[liveStates][]byte
	mu     sync.Mutex
	had    [liveBlocks]uint8 // bit s: block held state s (set before the write starts)
	cur    [liveBlocks]int
	writes int
}

func (w *liveWriter) run(stop <-chan struct{}) error {
	rng := rand.New(rand.NewPCG(1, 2))
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		b := rng.IntN(liveBlocks)
		w.mu.Lock()
		s := (w.cur[b] + 1) % liveStates
		w.cur[b] = s
		w.had[b] |= 1 << s
		w.writes++
		w.mu.Unlock()
		if _, err := w.f.WriteAt(liveState(w.images, b, s), int64(b)*liveBlock); err != nil {
			return err
		}
	}
}

// states returns, per block, the states it has had so far.
func (w *liveWriter) states() [liveBlocks]uint8 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.had
}

// noReflinkDir returns a directory where an image cannot be reflink-cloned,
// so that a crash-consistent create reads the live image: the temporary
// directory, or else one on tmpfs.
func noReflinkDir(t *testing.T) string {
	t.Helper()
	for _, dir := range []string{t.TempDir(), "/dev/shm"} {
		if dir == "/dev/shm" {
			d, err := os.MkdirTemp(dir, "diskpoint-livewrite-")
			if err != nil {
				break
			}
			t.Cleanup(func() { os.RemoveAll(d) })
			dir = d
		}
		probe := filepath.Join(dir, "probe")
		if err := os.WriteFile(probe, make([]byte, 4096), 0o600); err != nil {
			t.Fatal(err)
		}
		clone, err := blockdiff.ReflinkClone(context.Background(), probe)
		if errors.Is(err, blockdiff.ErrNoReflink) {
			return dir
		}
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(clone)
	}
	t.Skip("no directory without reflinks: the live-read path cannot be reached")
	return ""
}

// A disk written while restore points of it are taken (crash-consistent,
// read live because the file system has no reflinks) must still give a
// repository where every chunk's bytes hash to its ID: verify is clean,
// every restore point restores, each block of it to a state the block
// really had or a tear of such states, and a restore point of the disk once
// idle, which dedups against everything the busy ones stored, restores
// bit-exact.
func TestLiveWriteStoresWhatItHashed(t *testing.T) {
	ctx := context.Background()
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	img := filepath.Join(noReflinkDir(t), "live.img")
	f, err := os.OpenFile(img, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	images := liveImages()
	w := &liveWriter{f: f, images: &images}
	for b := range liveBlocks {
		w.had[b] = 1 // state 0
	}
	if _, err := f.WriteAt(images[0], 0); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	writerDone := make(chan error, 1)
	go func() { writerDone <- w.run(stop) }()
	stopWriter := func() error {
		if stop == nil {
			return nil
		}
		close(stop)
		stop = nil
		return <-writerDone
	}
	defer stopWriter()

	type point struct {
		id  string
		had [liveBlocks]uint8 // the states each block had by the time the point was taken
	}
	var busy []point
	create := func() string {
		t.Helper()
		rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: img}}})
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		if got := rp.Disks[0].Capture; got != "read" {
			t.Fatalf("capture method %q: the test needs the live disk read", got)
		}
		return rp.ID
	}
	for range liveBusyPoints {
		id := create()
		busy = append(busy, point{id, w.states()})
	}
	if err := stopWriter(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d blocks written during %d creates", w.writes, liveBusyPoints)
	idle := readFile(t, img)
	idleID := create()

	vr, err := repo.Verify(ctx, snapshot.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !vr.OK() {
		var blobs int
		for _, d := range vr.Damage {
			blobs += len(d.DataBlobs)
		}
		t.Errorf("verify: %d damaged objects, %d data blobs; the first: %s: %s", len(vr.Damage), blobs, vr.Damage[0].Object, vr.Damage[0].Reason)
	}

	out := filepath.Join(t.TempDir(), "restored.img")
	restore := func(what, id string) []byte {
		t.Helper()
		if _, err := vm.RestoreDisk(ctx, snapshot.RestoreOptions{Point: id, Disk: "d", Path: out}); err != nil {
			t.Errorf("%s: %v", what, err)
			return nil
		}
		defer os.Remove(out)
		return readFile(t, out)
	}
	var torn int
	for i, p := range busy {
		got := restore(fmt.Sprintf("point %d, taken while the disk was written", i), p.id)
		if got == nil {
			continue
		}
		if len(got) != liveBlocks*liveBlock {
			t.Fatalf("point %d: restored %d bytes, want %d", i, len(got), liveBlocks*liveBlock)
		}
		for b := range liveBlocks {
			block := got[b*liveBlock : (b+1)*liveBlock]
			var had [][]byte
			for s := range liveStates {
				if p.had[b]&(1<<s) != 0 {
					had = append(had, liveState(&images, b, s))
				}
			}
			whole := false
			for _, st := range had {
				whole = whole || bytes.Equal(block, st)
			}
			if whole {
				continue
			}
			// A tear: a crash-consistent read may mix states, byte by byte,
			// but every byte must be one that some state of this block had.
			torn++
			if at := byteNoStateHad(block, had); at >= 0 {
				t.Errorf("point %d: block %d: byte %d is %#x, which no state this block had (%08b) held there", i, b, at, block[at], p.had[b])
				break
			}
		}
	}
	t.Logf("%d blocks restored torn between states (crash-consistent reads)", torn)
	if got := restore("the point of the idle disk", idleID); got != nil && !bytes.Equal(got, idle) {
		t.Errorf("the point of the idle disk restores other bytes than the disk holds")
	}
}

// byteNoStateHad returns the first offset where block differs from every
// one of states, or -1.
func byteNoStateHad(block []byte, states [][]byte) int {
next:
	for i, c := range block {
		for _, s := range states {
			if s[i] == c {
				continue next
			}
		}
		return i
	}
	return -1
}
