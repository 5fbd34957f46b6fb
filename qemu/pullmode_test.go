package qemu

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/snapshot"
)

const (
	diskSize   = 128 << 20 // sparse: only what the writer wrote is allocated
	recordSize = 4096
	maxRecords = diskSize/recordSize - 1 // record n is at slot n; slot 0 stays empty
)

// record is record n's bytes: its number, repeated.
func record(n uint64) []byte {
	b := make([]byte, recordSize)
	for i := 0; i < recordSize; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], n)
	}
	return b
}

// recordWriter writes records 1, 2, ... to their slots, one at a time,
// and notes when each was sent and acknowledged.
type recordWriter struct {
	mu   sync.Mutex
	cond *sync.Cond
	gate sync.Mutex // held while a restore point is checked: the writer waits

	sent, ack  []time.Time // index n-1
	err        error
	stop, done chan struct{}
}

func startWriter(t *testing.T, d *storageDaemon) *recordWriter {
	w, err := dialNBDWriter(d.nbd, "w")
	if err != nil {
		t.Fatal(err)
	}
	rw := &recordWriter{stop: make(chan struct{}), done: make(chan struct{})}
	rw.cond = sync.NewCond(&rw.mu)
	go func() {
		defer close(rw.done)
		defer w.Close()
		for n := uint64(1); n <= maxRecords; n++ {
			select {
			case <-rw.stop:
				return
			default:
			}
			rw.gate.Lock()
			sent := time.Now()
			err := w.WriteAt(record(n), int64(n)*recordSize)
			rw.gate.Unlock()
			rw.mu.Lock()
			rw.sent, rw.ack, rw.err = append(rw.sent, sent), append(rw.ack, time.Now()), err
			rw.cond.Broadcast()
			rw.mu.Unlock()
			if err != nil {
				return
			}
		}
		rw.mu.Lock()
		rw.err = errors.New("the writer ran out of slots: make the disk larger")
		rw.cond.Broadcast()
		rw.mu.Unlock()
	}()
	t.Cleanup(func() { close(rw.stop); <-rw.done })
	return rw
}

// waitFor blocks until n more records than now are acknowledged.
func (rw *recordWriter) waitFor(t *testing.T, more int) {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	for want := len(rw.ack) + more; len(rw.ack) < want && rw.err == nil; {
		rw.cond.Wait()
	}
	if rw.err != nil {
		t.Fatalf("writer: %v", rw.err)
	}
}

// longestStall is the longest a write took to be acknowledged between
// from and to.
func (rw *recordWriter) longestStall(from, to time.Time) time.Duration {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	var longest time.Duration
	for i := range rw.ack {
		if rw.ack[i].After(from) && rw.sent[i].Before(to) {
			longest = max(longest, rw.ack[i].Sub(rw.sent[i]))
		}
	}
	return longest
}

// backup takes a pull-mode restore point; read runs, with the export,
// once the writer has written more records after the transaction (so a
// view that was not frozen would show them).
func backup(t *testing.T, ctx context.Context, c *Client, d *storageDaemon, vm *snapshot.Collection, rw *recordWriter, prev, next string, fail error) (*snapshot.RestorePoint, PullExport, blockdiffRead, error) {
	var rp *snapshot.RestorePoint
	var read blockdiffRead
	hold := func(context.Context) (func(), error) {
		read.held = time.Now()
		return func() { read.released = time.Now() }, nil
	}
	exp, err := PullBackup(ctx, c, PullOptions{Node: "disk0", Previous: prev, Next: next, NBDSocket: d.nbd, FleeceDir: t.TempDir(), Hold: hold},
		func(ctx context.Context, exp PullExport) error {
			rw.waitFor(t, 50)
			if fail != nil {
				return fail
			}
			var err error
			rp, err = vm.Create(ctx, snapshot.CreateOptions{
				Disks: []snapshot.DiskSource{{Name: "os", NBD: exp.URI, Bitmap: exp.Bitmap, NextBitmap: exp.NextBitmap, HeldStill: exp.FreezeWindow}},
				Progress: func(p snapshot.Progress) {
					read.bytes = p.Scan.Read
				},
			})
			return err
		})
	return rp, exp, read, err
}

// blockdiffRead is what a backup saw: the bytes its create read, and when
// PullOptions.Hold held the guest and let it go.
type blockdiffRead struct {
	bytes          int64
	held, released time.Time
}

// checkRecords restores rp and checks that it holds exactly records 1..K
// for some K, every record acknowledged before the transaction, and none
// sent after it ended.
func checkRecords(t *testing.T, vm *snapshot.Collection, rp *snapshot.RestorePoint, exp PullExport, rw *recordWriter) int {
	t.Helper()
	rw.gate.Lock() // the checks need no writes, and the disk stays small
	defer rw.gate.Unlock()
	out := filepath.Join(t.TempDir(), "restored.img")
	if _, err := vm.RestoreDisk(context.Background(), snapshot.RestoreOptions{Point: rp.ID, Disk: "os", Path: out}); err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	k := 0
	for k < maxRecords && bytes.Equal(img[(k+1)*recordSize:(k+2)*recordSize], record(uint64(k+1))) {
		k++
	}
	if !bytes.Equal(img[(k+1)*recordSize:], make([]byte, len(img)-(k+1)*recordSize)) || !bytes.Equal(img[:recordSize], make([]byte, recordSize)) {
		t.Fatalf("the restored image holds records 1..%d and then something other than zeroes", k)
	}
	end := exp.FrozenAt.Add(exp.FreezeWindow)
	rw.mu.Lock()
	defer rw.mu.Unlock()
	before, after := 0, 0
	for i := range rw.ack {
		n := i + 1
		if rw.ack[i].Before(exp.FrozenAt) {
			before++
			if n > k {
				t.Errorf("record %d, acknowledged %v before the transaction, is not in the restore point (it holds 1..%d)", n, exp.FrozenAt.Sub(rw.ack[i]), k)
			}
		}
		if rw.sent[i].After(end) {
			after++
			if n <= k {
				t.Errorf("record %d, sent %v after the transaction, is in the restore point", n, rw.sent[i].Sub(end))
			}
		}
	}
	if before == 0 || after < 50 {
		t.Fatalf("%d records acknowledged before the transaction, %d sent after: the test proves nothing", before, after)
	}
	return k
}

func newVM(t *testing.T) *snapshot.Collection {
	repo, err := snapshot.Init(context.Background(), filepath.Join(t.TempDir(), "repo"), snapshot.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vm, err := repo.Collection("vm")
	if err != nil {
		t.Fatal(err)
	}
	return vm
}

func TestPullModeBackupWhileWriting(t *testing.T) {
	d := startDaemon(t, diskSize)
	ctx := context.Background()
	c := d.client(t)
	vm := newVM(t)
	rw := startWriter(t, d)
	rw.waitFor(t, 2000)

	rp1, exp1, read1, err := backup(t, ctx, c, d, vm, rw, "", "diskpoint-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	k1 := checkRecords(t, vm, rp1, exp1, rw)
	d1, _ := rp1.Disk("os")
	if d1.Bitmap != "diskpoint-1" || d1.BitmapRead != "" || d1.ChangeSource != snapshot.ChangeSourceHash || d1.Capture != "frozen-view" {
		t.Errorf("first point: bitmap %q, read %q, change source %q, capture %q", d1.Bitmap, d1.BitmapRead, d1.ChangeSource, d1.Capture)
	}
	if read1.held.After(exp1.FrozenAt) || read1.released.Before(exp1.FrozenAt.Add(exp1.FreezeWindow)) || read1.released.After(exp1.FrozenAt.Add(exp1.FreezeWindow+time.Second)) {
		t.Errorf("Hold held from %v to %v; the transaction ran from %v for %v", read1.held, read1.released, exp1.FrozenAt, exp1.FreezeWindow)
	}
	if rp1.FreezeMillis != exp1.FreezeWindow.Milliseconds() {
		t.Errorf("freeze_ms %d, the transaction took %v", rp1.FreezeMillis, exp1.FreezeWindow)
	}

	rw.waitFor(t, 300)
	rp2, exp2, read2, err := backup(t, ctx, c, d, vm, rw, "diskpoint-1", "diskpoint-2", nil)
	if err != nil {
		t.Fatal(err)
	}
	k2 := checkRecords(t, vm, rp2, exp2, rw)
	d2, _ := rp2.Disk("os")
	if d2.Bitmap != "diskpoint-2" || d2.BitmapRead != "diskpoint-1" || d2.ChangeSource != snapshot.ChangeSourceBitmap {
		t.Errorf("second point: bitmap %q, read %q, change source %q (%s)", d2.Bitmap, d2.BitmapRead, d2.ChangeSource, d2.ChangeReason)
	}
	// The bitmap marks the records written between the two transactions
	// (and the one in flight at the first), at its 64 KiB granularity;
	// the create reads them in whole blocks, and not records 1..k1 (k1 is
	// over 2000: 8 MB the hashing incremental would read).
	gran := int64(64 << 10)
	dirtyFrom, dirtyTo := int64(k1)*recordSize/gran*gran, (int64(k2+1)*recordSize+gran-1)/gran*gran
	if limit := dirtyTo - dirtyFrom + 2*int64(d2.BlockSize); read2.bytes > limit || read2.bytes < int64(k2-k1-1)*recordSize {
		t.Errorf("second point read %d bytes; the bitmap's extents span %d (records %d..%d of %d bytes)", read2.bytes, dirtyTo-dirtyFrom, k1, k2, int64(k2)*recordSize)
	}
	node, err := c.blockNode(ctx, "disk0")
	if err != nil {
		t.Fatal(err)
	}
	if len(node.DirtyBitmaps) != 1 || node.DirtyBitmaps[0].Name != "diskpoint-2" || !node.DirtyBitmaps[0].Recording || !node.DirtyBitmaps[0].Persistent {
		t.Errorf("bitmaps left on the node: %+v, want only diskpoint-2, recording and persistent", node.DirtyBitmaps)
	}
	t.Logf("freeze_ms %d and %d (transactions of %v, %v); writer's longest stall across a backup %v and %v; records %d, %d; second point read %d bytes, first %d",
		rp1.FreezeMillis, rp2.FreezeMillis, exp1.FreezeWindow, exp2.FreezeWindow,
		rw.longestStall(exp1.FrozenAt, exp1.FrozenAt.Add(exp1.FreezeWindow)), rw.longestStall(exp2.FrozenAt, exp2.FrozenAt.Add(exp2.FreezeWindow)),
		k1, k2, read2.bytes, read1.bytes)
}
