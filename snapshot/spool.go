package snapshot

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/diskpoint/diskpoint/chain"
)

// DefaultSpoolMemory is how much of what a read inside the freeze window
// keeps for after the thaw is held in memory when CreateOptions.SpoolMemory
// is 0; the rest goes to a temporary file.
const DefaultSpoolMemory = 128 << 20

// spoolFilePattern names the spool's temporary file. Its ".tmp-" prefix is
// the one LocalStore gives its own temporary files, so that a listing of
// the repository skips it in the instant before it is unlinked.
const spoolFilePattern = ".tmp-diskpoint-spool-*"

// spool keeps copies of bytes for a while: in memory up to a limit, then
// in one temporary file. The file is unlinked as soon as it is created, so
// its space is freed when the spool is closed or the process ends, however
// it ends. It is safe for concurrent use.
type spool struct {
	dir      string // where the file is created
	memLimit int64

	mu      sync.Mutex
	memUsed int64
	file    *os.File
	fileEnd int64
	claimed map[chain.ID]bool // blocks some disk has put here
	closed  bool
}

// spoolRecord is where the spool keeps one put's bytes.
type spoolRecord struct {
	mem  []byte // the bytes, when held in memory
	off  int64  // else their offset in the file
	size int
}

// inFile says the bytes are in the file, so that what is read back is
// checked against what was put.
func (r spoolRecord) inFile() bool { return r.mem == nil }

func newSpool(dir string, memLimit int64) *spool {
	return &spool{dir: dir, memLimit: max(memLimit, 0), claimed: map[chain.ID]bool{}}
}

// claim reports whether block id is new to the spool, and claims it: a
// block that several places on the disks hold is kept once.
func (sp *spool) claim(id chain.ID) bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.claimed[id] {
		return false
	}
	sp.claimed[id] = true
	return true
}

// put keeps a copy of data.
func (sp *spool) put(data []byte) (spoolRecord, error) {
	n := int64(len(data))
	sp.mu.Lock()
	if sp.closed {
		sp.mu.Unlock()
		return spoolRecord{}, errors.New("spool: closed")
	}
	if sp.memUsed+n <= sp.memLimit {
		sp.memUsed += n
		sp.mu.Unlock()
		return spoolRecord{mem: bytes.Clone(data), size: len(data)}, nil
	}
	if sp.file == nil {
		f, err := createUnlinked(sp.dir)
		if err != nil {
			sp.mu.Unlock()
			return spoolRecord{}, err
		}
		sp.file = f
	}
	f, off := sp.file, sp.fileEnd
	sp.fileEnd += n
	sp.mu.Unlock()
	if _, err := f.WriteAt(data, off); err != nil {
		return spoolRecord{}, fmt.Errorf("spool file in %s: %w", sp.dir, err)
	}
	return spoolRecord{off: off, size: len(data)}, nil
}

// get returns the bytes of r: the spool's own memory, or read from the
// file into *buf (grown as needed). The caller must not change them.
func (sp *spool) get(r spoolRecord, buf *[]byte) ([]byte, error) {
	if !r.inFile() {
		return r.mem, nil
	}
	sp.mu.Lock()
	f := sp.file
	sp.mu.Unlock()
	if f == nil {
		return nil, errors.New("spool: closed")
	}
	if cap(*buf) < r.size {
		*buf = make([]byte, r.size)
	}
	data := (*buf)[:r.size]
	if _, err := f.ReadAt(data, r.off); err != nil {
		return nil, fmt.Errorf("spool file in %s: read %d bytes at %d: %w", sp.dir, r.size, r.off, err)
	}
	return data, nil
}

// close frees the spool's file; what is in memory is freed with the
// records that hold it. Puts and gets fail afterwards. It may be called
// more than once.
func (sp *spool) close() error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.closed = true
	if sp.file == nil {
		return nil
	}
	err := sp.file.Close()
	sp.file = nil
	if err != nil {
		return fmt.Errorf("spool file in %s: %w", sp.dir, err)
	}
	return nil
}

// createUnlinked creates a temporary file in dir, readable by its owner
// only, and unlinks it at once.
func createUnlinked(dir string) (*os.File, error) {
	f, err := os.CreateTemp(dir, spoolFilePattern)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("spool: %w", err)
	}
	return f, nil
}
