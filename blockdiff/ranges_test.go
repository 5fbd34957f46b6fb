package blockdiff_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/blockdiff"
)

func TestParseRanges(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string
		wantErr string
	}{
		{"", "[]", ""},
		{"0 10\n", "[{0 10}]", ""},
		{"# comment\n\n100 5\n0 10\n  8 4 \n", "[{0 12} {100 5}]", ""},
		{"0 10\n10 10\n", "[{0 20}]", ""},
		{"5\t7", "[{5 7}]", ""},
		{"1 2 3", "", "line 1"},
		{"a b", "", "decimal"},
		{"0 10\n-1 5", "", "line 2"},
		{"0 0", "", "length 0"},
		{"9223372036854775807 1", "", "overflows"},
	} {
		got, err := blockdiff.ParseRanges(strings.NewReader(tc.in))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseRanges(%q) = %v, want error containing %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseRanges(%q): %v", tc.in, err)
			continue
		}
		if s := fmt.Sprint(got); s != tc.want && !(tc.want == "[]" && len(got) == 0) {
			t.Errorf("ParseRanges(%q) = %s, want %s", tc.in, s, tc.want)
		}
	}
}

func FuzzParseRanges(f *testing.F) {
	for _, seed := range []string{"0 10\n", "# x\n5 5\n3 9\n", "1 2 3", "-1 1", "18446744073709551615 1", "0 9223372036854775807"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		rs, err := blockdiff.ParseRanges(strings.NewReader(in))
		if err != nil {
			return
		}
		for i, r := range rs {
			if r.Offset < 0 || r.Length <= 0 || r.End() < r.Offset {
				t.Fatalf("range %d invalid: %+v", i, r)
			}
			if i > 0 && r.Offset <= rs[i-1].End() {
				t.Fatalf("ranges not merged: %+v then %+v", rs[i-1], r)
			}
		}
	})
}

// A range that ends past the disk is an error naming its line; one that
// ends exactly at the end is fine.
func TestParseRangesWithinDisk(t *testing.T) {
	if got, err := blockdiff.ParseRangesWithin(strings.NewReader("0 10\n90 10\n"), 100); err != nil || len(got) != 2 {
		t.Fatalf("ranges up to the end: %v, %v", got, err)
	}
	_, err := blockdiff.ParseRangesWithin(strings.NewReader("0 10\n# note\n95 10\n"), 100)
	if err == nil || !strings.Contains(err.Error(), "line 3") || !strings.Contains(err.Error(), "past the disk's end") {
		t.Fatalf("a range past the end: %v, want an error naming line 3", err)
	}
}
