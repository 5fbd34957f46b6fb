package benchutil

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func TestMedian(t *testing.T) {
	v := []int64{5, 1, 3, 2}
	if got := Median(v); got != 3 {
		t.Errorf("Median = %d, want 3", got)
	}
	if v[0] != 5 {
		t.Errorf("Median sorted its argument: %v", v)
	}
}

func TestReplaceBetweenMarkers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "RESULTS.md")
	os.WriteFile(path, []byte("# R\n\n<!-- x:begin -->\nold\n<!-- x:end -->\nafter\n"), 0o644)
	if err := ReplaceBetweenMarkers(path, "x", "", "new"); err != nil {
		t.Fatal(err)
	}
	if err := ReplaceBetweenMarkers(path, "y", "", "new"); err == nil {
		t.Error("no error for missing markers without a heading")
	}
	if err := ReplaceBetweenMarkers(path, "y", "Y", "t"); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	want := "# R\n\n<!-- x:begin -->\n\nnew\n<!-- x:end -->\nafter\n\n## Y\n\n<!-- y:begin -->\n\nt\n<!-- y:end -->\n"
	if string(data) != want {
		t.Errorf("got %q, want %q", data, want)
	}
}

func TestTouchAndFreeGivesTheMemoryBack(t *testing.T) {
	rss := func() int64 {
		data, err := os.ReadFile("/proc/self/statm")
		if err != nil {
			t.Skip("no /proc/self/statm:", err)
		}
		var size, resident int64
		fmt.Sscan(string(data), &size, &resident)
		return resident * int64(os.Getpagesize())
	}
	before := rss()
	if err := TouchAndFree(64 << 20); err != nil {
		t.Fatal(err)
	}
	if after := rss(); after-before >= 32<<20 {
		t.Errorf("RSS grew by %d bytes: the touched memory was kept", after-before)
	}
}
