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
// table between the markers of its size in the results file.
func TestScaleSmoke(t *testing.T) {
	dir := t.TempDir()
	results := filepath.Join(dir, "RESULTS.md")
	if err := os.WriteFile(results, []byte("<!-- scale:begin -->\n<!-- scale:end -->\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := scale(t, "-chunks", "300", "-points", "6", "-runs", "1", "-work", filepath.Join(dir, "work"), "-out", results)
	if err != nil {
		t.Fatalf("scale: %v\n%s", err, out)
	}
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
	data, err := os.ReadFile(results)
	if err != nil {
		t.Fatal(err)
	}
	table := out[strings.Index(out, "Measured"):]
	if want := "<!-- scale:begin -->\n<!-- scale:300:1:begin -->\n\n" + table + "\n<!-- scale:300:1:end -->\n\n<!-- scale:end -->\n"; string(data) != want {
		t.Errorf("the results file is\n%s\nwant\n%s", data, want)
	}
}

// A run's table replaces the one of the same size and format, and a run of
// another size gets a place of its own; the prose around stays.
func TestWriteBetweenMarkers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "RESULTS.md")
	const prose = "# Results\n\nprose before\n\n<!-- scale:begin -->\n<!-- scale:end -->\n\nprose after\n"
	if err := os.WriteFile(path, []byte(prose), 0o644); err != nil {
		t.Fatal(err)
	}
	write := func(chunks int64, format int, table string) string {
		t.Helper()
		if err := writeBetweenMarkers(path, params{chunks: chunks, format: format}, table); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	write(300, 1, "first\n")
	write(200, 1, "other size\n")
	write(300, 2, "other format\n")
	got := write(300, 1, "again\n")
	want := "# Results\n\nprose before\n\n<!-- scale:begin -->\n" +
		"<!-- scale:300:1:begin -->\n\nagain\n\n<!-- scale:300:1:end -->\n\n" +
		"<!-- scale:200:1:begin -->\n\nother size\n\n<!-- scale:200:1:end -->\n\n" +
		"<!-- scale:300:2:begin -->\n\nother format\n\n<!-- scale:300:2:end -->\n\n" +
		"<!-- scale:end -->\n\nprose after\n"
	if got != want {
		t.Errorf("the results file is\n%s\nwant\n%s", got, want)
	}
	if err := os.WriteFile(path, []byte("no markers\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeBetweenMarkers(path, params{chunks: 1, format: 1}, "x\n"); err == nil || !strings.Contains(err.Error(), "scale:end") {
		t.Errorf("a file without markers: %v, want an error naming the line it lacks", err)
	}
}

// A format this build cannot make is refused before anything is measured,
// with a message that says why.
func TestScaleRefusesFormats(t *testing.T) {
	for _, tc := range []struct{ format, want string }{
		{"3", "want 1 or 2"},
	} {
		out, err := scale(t, "-chunks", "10", "-format", tc.format, "-work", t.TempDir())
		if err == nil || !strings.Contains(out, tc.want) || strings.Contains(out, "scale: init") {
			t.Errorf("-format %s: %v, %q; want a failure saying %q before any step", tc.format, err, out, tc.want)
		}
	}
}

// The steps run on a version 2 repository too.
func TestScaleSmokeFormat2(t *testing.T) {
	dir := t.TempDir()
	results := filepath.Join(dir, "RESULTS.md")
	if err := os.WriteFile(results, []byte("<!-- scale:begin -->\n<!-- scale:end -->\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := scale(t, "-chunks", "300", "-points", "6", "-runs", "1", "-format", "2", "-work", filepath.Join(dir, "work"), "-out", results)
	if err != nil {
		t.Fatalf("scale -format 2: %v\n%s", err, out)
	}
	for _, want := range []string{"bit-exact", "| sound |"} {
		if !strings.Contains(out, want) {
			t.Errorf("scale -format 2 does not say %q:\n%s", want, out)
		}
	}
}
