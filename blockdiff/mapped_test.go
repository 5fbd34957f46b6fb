package blockdiff

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A mapped disk that is truncated after its pages were populated faults
// when touched; the guard turns that into an error naming the disk.
func TestMappedDiskThatShrinksIsAnErrorNotACrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	const size = 1 << 20
	if err := os.WriteFile(path, []byte(strings.Repeat("diskpoint", size/9+1))[:size], 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := OpenDisk(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	touch := func(truncateAfterPopulate bool) (sum int, err error) {
		var m *segmentMap
		defer guardFaults(d, &m, &err)()
		if m, err = d.mapSegment(0, size); err != nil || m == nil {
			t.Fatalf("map: %v, %v (this file system should map)", m, err)
		}
		p, err := m.run(d, 0, size)
		if err != nil {
			return 0, err
		}
		if truncateAfterPopulate {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < len(p); i += 4096 {
			sum += int(p[i])
		}
		return sum, nil
	}
	if sum, err := touch(false); err != nil || sum == 0 {
		t.Fatalf("reading the mapped disk: sum %d, %v", sum, err)
	}
	_, err = touch(true)
	if err == nil || !strings.Contains(err.Error(), "fault on the mapped disk") || !strings.Contains(err.Error(), path) {
		t.Fatalf("touching pages truncated away: %v, want a fault error naming %s", err, path)
	}
	// Populating pages past the new end is refused up front.
	_, err = touch(false)
	if err == nil || !strings.Contains(err.Error(), "disk ended early") {
		t.Fatalf("mapping a disk that shrank: %v, want 'disk ended early'", err)
	}
}
