package blockdiff

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Range is a span of bytes of a disk.
type Range struct {
	Offset int64
	Length int64
}

// End is the offset just past the range.
func (r Range) End() int64 { return r.Offset + r.Length }

// ParseRanges reads a changed-range list: one "OFFSET LENGTH" pair of byte
// counts per line, in decimal, separated by spaces or tabs. Blank lines and
// lines starting with '#' are skipped. The result is sorted and merged.
func ParseRanges(r io.Reader) ([]Range, error) {
	return parseRanges(r, -1)
}

// ParseRangesWithin is ParseRanges for a disk of diskSize bytes: a range
// that ends past the disk's end is an error naming its line, since the list
// then cannot be this disk's (a wrong file, or another disk's).
func ParseRangesWithin(r io.Reader, diskSize int64) ([]Range, error) {
	if diskSize < 0 {
		return nil, fmt.Errorf("changed ranges: disk size %d is negative", diskSize)
	}
	return parseRanges(r, diskSize)
}

// parseRanges parses a changed-range list; limit, unless negative, is the
// disk size no range may pass.
func parseRanges(r io.Reader, limit int64) ([]Range, error) {
	var out []Range
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 1<<16)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) != 2 {
			return nil, fmt.Errorf("changed ranges, line %d: want \"OFFSET LENGTH\", got %q", line, truncate(text))
		}
		off, err1 := strconv.ParseInt(fields[0], 10, 64)
		n, err2 := strconv.ParseInt(fields[1], 10, 64)
		switch {
		case err1 != nil || err2 != nil:
			return nil, fmt.Errorf("changed ranges, line %d: %q is not two decimal byte counts", line, truncate(text))
		case off < 0 || n <= 0:
			return nil, fmt.Errorf("changed ranges, line %d: offset %d must be >= 0 and length %d > 0", line, off, n)
		case n > math.MaxInt64-off:
			return nil, fmt.Errorf("changed ranges, line %d: range overflows", line)
		case limit >= 0 && off+n > limit:
			return nil, fmt.Errorf("changed ranges, line %d: range %d+%d ends at byte %d, past the disk's end (%d bytes)", line, off, n, off+n, limit)
		}
		out = append(out, Range{off, n})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("changed ranges: %w", err)
	}
	return MergeRanges(out), nil
}

func truncate(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}

// MergeRanges sorts ranges and merges those that overlap or touch. It
// drops empty ones.
func MergeRanges(ranges []Range) []Range {
	rs := make([]Range, 0, len(ranges))
	for _, r := range ranges {
		if r.Length > 0 {
			rs = append(rs, r)
		}
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].Offset < rs[j].Offset })
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && r.Offset <= out[n-1].End() {
			out[n-1].Length = max(out[n-1].End(), r.End()) - out[n-1].Offset
			continue
		}
		out = append(out, r)
	}
	return out
}
