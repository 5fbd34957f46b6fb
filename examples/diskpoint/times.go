package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// timeLayout is how the CLI shows a time: local, to the second, with the
// zone's offset, so that times read the same on any host.
const timeLayout = "2006-01-02 15:04:05 -07:00"

// showTime formats t in the local zone.
func showTime(t time.Time) string { return t.Local().Format(timeLayout) }

// parseKeepWithin reads a -keep-within duration: Go's units (h, m, s) and,
// as restic does, days (d), weeks (w) and years (y, 365 days), combined
// freely: 7d, 2w, 1y, 1d12h, 36h.
func parseKeepWithin(s string) (time.Duration, error) {
	var total time.Duration
	rest := strings.TrimSpace(s)
	if rest == "" {
		return 0, fmt.Errorf("%q is not a duration (like 7d, 2w, 36h)", s)
	}
	for rest != "" {
		i := strings.IndexAny(rest, "dwy")
		if i < 0 {
			d, err := time.ParseDuration(rest)
			if err != nil {
				return 0, fmt.Errorf("%q is not a duration (like 7d, 2w, 36h)", s)
			}
			total += d
			break
		}
		n, err := strconv.Atoi(rest[:i])
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%q is not a duration (like 7d, 2w, 36h)", s)
		}
		day := 24 * time.Hour
		total += time.Duration(n) * map[byte]time.Duration{'d': day, 'w': 7 * day, 'y': 365 * day}[rest[i]]
		rest = rest[i+1:]
	}
	if total <= 0 {
		return 0, fmt.Errorf("%q: the duration must be positive", s)
	}
	return total, nil
}
