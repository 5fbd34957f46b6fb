package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// The example, started without a daemon, starts one, writes 1 MiB between
// two pull-mode restore points, and the second reads it by the bitmap.
func TestQemuBackupEndToEnd(t *testing.T) {
	for _, tool := range []string{"qemu-storage-daemon", "qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing, and CI must run this test", tool)
			}
			t.Skipf("%s is not installed", tool)
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), &out, filepath.Join(t.TempDir(), "repo"), "vm", "os", "", "", "", ""); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	first := regexp.MustCompile(`disk os, 0 bytes changed, change source hash \(read bitmap "", next "(diskpoint-[^"]+)"\), freeze \d+ ms`).FindStringSubmatch(out.String())
	if first == nil {
		t.Fatalf("no first, full restore point in:\n%s", out.String())
	}
	second := regexp.MustCompile(`disk os, 1048576 bytes changed, change source bitmap \(read bitmap "` + first[1] + `", next "diskpoint-[^"]+"\)`)
	if !second.MatchString(out.String()) {
		t.Fatalf("the second restore point did not read the 1 MiB by bitmap %s:\n%s", first[1], out.String())
	}
}
