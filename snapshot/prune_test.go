package snapshot

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// pointsAt makes restore points (oldest first) created at the given RFC 3339 times.
func pointsAt(t *testing.T, times ...string) []*RestorePoint {
	t.Helper()
	var out []*RestorePoint
	for i, s := range times {
		at, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, &RestorePoint{ID: string(rune('A' + i)), Created: at})
	}
	return out
}

func keptIDs(reasons map[string][]string, rule string) string {
	var ids []string
	for id, rs := range reasons {
		if slices.Contains(rs, rule) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return strings.Join(ids, "")
}

// Daily and hourly buckets are the policy's zone's days and hours: two
// points on one UTC day but on two days in New York are two days there.
func TestPruneBucketsInLocalTime(t *testing.T) {
	newYork, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Skip("no time zone database:", err)
	}
	// A: 2026-11-22 03:00 UTC = 21 Nov 22:00 in New York; B: 22 Nov 12:00 UTC.
	points := pointsAt(t, "2026-11-22T03:00:00Z", "2026-11-22T12:00:00Z")
	if got := keptIDs(keepReasons(points, RetentionPolicy{Daily: 2, Location: time.UTC}), "daily"); got != "B" {
		t.Errorf("daily in UTC keeps %q, want B (one UTC day)", got)
	}
	if got := keptIDs(keepReasons(points, RetentionPolicy{Daily: 2, Location: newYork}), "daily"); got != "AB" {
		t.Errorf("daily in New York keeps %q, want AB (two local days)", got)
	}
	saved := time.Local
	time.Local = newYork
	defer func() { time.Local = saved }()
	if got := keptIDs(keepReasons(points, RetentionPolicy{Daily: 2}), "daily"); got != "AB" {
		t.Errorf("daily with no Location keeps %q, want AB: nil means time.Local", got)
	}
}

func TestPruneKeepYearlyAndWithin(t *testing.T) {
	points := pointsAt(t, "2024-03-01T00:00:00Z", "2024-12-01T00:00:00Z", "2025-06-01T00:00:00Z", "2026-11-01T00:00:00Z", "2026-11-20T00:00:00Z", "2026-11-22T00:00:00Z")
	reasons := keepReasons(points, RetentionPolicy{Yearly: 2, Within: 72 * time.Hour, Location: time.UTC})
	if got := keptIDs(reasons, "yearly"); got != "CF" {
		t.Errorf("yearly 2 keeps %q, want CF (the newest of 2026 and of 2025)", got)
	}
	if got := keptIDs(reasons, "within"); got != "EF" {
		t.Errorf("within 72h of the newest keeps %q, want EF", got)
	}
	if (RetentionPolicy{Within: time.Hour}).IsEmpty() || (RetentionPolicy{Yearly: 1}).IsEmpty() || !(RetentionPolicy{Location: time.UTC}).IsEmpty() {
		t.Error("IsEmpty is wrong")
	}
}
