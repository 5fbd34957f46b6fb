package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMain lets the test binary act as the program, so the smoke test runs
// it, children and all, as it runs for real.
func TestMain(m *testing.M) {
	if os.Getenv("DISKPOINT_TEST_SCALE") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// scale runs the program with args and returns its output and error.
func scale(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "DISKPOINT_TEST_SCALE=1")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// The program runs every step at a tiny size, each in a child, and puts its
// table between the markers of its size in the results file: replacing the
// table of the same size, adding one for another size.
func TestScaleSmoke(t *testing.T) {
	dir := t.TempDir()
	results := filepath.Join(dir, "RESULTS.md")
	const prose = "# Results\n\nprose before\n\n<!-- scale:begin -->\n<!-- scale:end -->\n\nprose after\n"
	if err := os.WriteFile(results, []byte(prose), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(chunks string) string {
		t.Helper()
		out, err := scale(t, "-chunks", chunks, "-points", "6", "-runs", "1", "-work", filepath.Join(dir, "work"+chunks), "-out", results)
		if err != nil {
			t.Fatalf("scale -chunks %s: %v\n%s", chunks, err, out)
		}
		return out
	}
	out := run("300")
	for _, step := range stepOrder {
		if !strings.Contains(out, "| "+step+" |") {
			t.Errorf("the table has no row for step %q:\n%s", step, out)
		}
	}
	for _, want := range []string{"| 6 points |", "of it index files", "bit-exact", "| sound |", "4.7 MiB changed", "300 blocks hashed"} {
		if !strings.Contains(out, want) {
			t.Errorf("the table does not say %q:\n%s", want, out)
		}
	}
	run("300") // again: replaces its table
	run("200") // another size: a table of its own
	data, err := os.ReadFile(results)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	if n := strings.Count(text, "<!-- scale:300:1:begin -->"); n != 1 {
		t.Errorf("the results file has %d tables of the 300-chunk run, want 1:\n%s", n, text)
	}
	if !strings.Contains(text, "<!-- scale:200:1:begin -->") || !strings.Contains(text, "a generated disk of 200 blocks") {
		t.Errorf("the results file has no table of the 200-chunk run:\n%s", text)
	}
	if !strings.HasPrefix(text, "# Results\n\nprose before\n\n<!-- scale:begin -->\n") || !strings.HasSuffix(text, "<!-- scale:end -->\n\nprose after\n") {
		t.Errorf("the prose around the markers changed:\n%s", text)
	}
}

// A format this build cannot make is refused before anything is measured,
// with a message that says why.
func TestScaleRefusesFormats(t *testing.T) {
	for _, tc := range []struct{ format, want string }{
		{"2", "cannot make a version 2 repository yet"},
		{"3", "want 1 or 2"},
	} {
		out, err := scale(t, "-chunks", "10", "-format", tc.format, "-work", t.TempDir())
		if err == nil || !strings.Contains(out, tc.want) || strings.Contains(out, "scale: init") {
			t.Errorf("-format %s: %v, %q; want a failure saying %q before any step", tc.format, err, out, tc.want)
		}
	}
}
