// Package benchutil holds what the benchmark programs under bench/ share:
// starting every step alike, medians, and the table cells and the marked
// section of RESULTS.md they write.
package benchutil

import (
	"cmp"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// Warm writes dirty pages back and reads the image and the repository's
// files into the page cache, so every step starts alike. An empty image or
// repo is skipped.
func Warm(image, repo string) {
	exec.Command("sync").Run()
	if image != "" {
		exec.Command("sh", "-c", "cat "+image+" > /dev/null").Run()
	}
	if repo != "" {
		exec.Command("sh", "-c", "find "+repo+" -type f -exec cat {} + > /dev/null").Run()
	}
}

// Median is the middle of v (the upper one of an even count); v is left
// unsorted.
func Median[T cmp.Ordered](v []T) T {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// Secs is a table cell of seconds.
func Secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// Yes is a table cell for a target met or not.
func Yes(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

// ReplaceBetweenMarkers writes text into path between its lines
// "<!-- NAME:begin -->" and "<!-- NAME:end -->". If path has none, it
// appends them under a "## heading" section, or fails when heading is empty.
func ReplaceBetweenMarkers(path, name, heading, text string) error {
	begin, end := "<!-- "+name+":begin -->\n", "<!-- "+name+":end -->"
	old, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(old)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		if heading == "" {
			return fmt.Errorf("%s has no %q ... %q lines to write between", path, strings.TrimSpace(begin), end)
		}
		s = strings.TrimRight(s, "\n") + "\n\n## " + heading + "\n\n" + begin + end + "\n"
		i, j = strings.Index(s, begin), strings.Index(s, end)
	}
	return os.WriteFile(path, []byte(s[:i+len(begin)]+"\n"+text+"\n"+s[j:]), 0o644)
}
