package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/internal/systest"
	"github.com/diskpoint/diskpoint/nbd"
)

// serve-nbd without -disk exports every disk of the point, each under its
// name, listed by NBD_OPT_LIST; each reads bit-exact, and base:allocation
// shows the zero blocks as holes, to nbd's client and to qemu-img map.
func TestCLIServeNBDExportsEveryDisk(t *testing.T) {
	systest.RequireTool(t, "qemu-img", "qemu-utils")
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	const bs = 64 << 10
	mustBinary(t, nil, "init", "-repo", repo, "-block-size", "64KiB")
	rng := rand.New(rand.NewPCG(5, 5))
	images := map[string][]byte{}
	var sources []string
	for _, d := range []struct {
		name  string
		size  int
		holes [][2]int
	}{
		{"os", 3<<20 + 4096, [][2]int{{bs, 3 * bs}, {2 << 20, 1 << 20}}},
		{"data", 1 << 20, [][2]int{{100, 200}}}, // no whole zero block
	} {
		b := make([]byte, d.size)
		for i := range b {
			b[i] = byte(rng.Uint32() | 1)
		}
		for _, h := range d.holes {
			clear(b[h[0] : h[0]+h[1]])
		}
		path := filepath.Join(dir, d.name+".img")
		os.WriteFile(path, b, 0o600)
		images[d.name] = b
		sources = append(sources, d.name+"="+path)
	}
	var rp struct{ ID string }
	json.Unmarshal([]byte(mustBinary(t, nil, append([]string{"create", "-repo", repo, "-collection", "vm", "-json"}, sources...)...)), &rp)

	sock := filepath.Join(dir, "nbd.sock")
	cmd := exec.Command(os.Args[0], "serve-nbd", "-repo", repo, "-collection", "vm", "-point", "latest", "-listen", "unix:"+sock)
	cmd.Env = append(os.Environ(), "DISKPOINT_TEST_CLI=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(stdout)
	var said []string
	for range 2 {
		if !lines.Scan() {
			cmd.Wait()
			t.Fatalf("serve-nbd said %q: %s", said, stderr.Bytes())
		}
		said = append(said, lines.Text())
	}
	for _, want := range []string{"serving disk os of restore point " + rp.ID, "serving disk data of restore point " + rp.ID, "nbd+unix:///data?socket=" + sock} {
		if !strings.Contains(strings.Join(said, "\n"), want) {
			t.Errorf("serve-nbd said %q, want %q in it", said, want)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	names, err := nbd.List(ctx, "nbd+unix:///?socket="+sock)
	if err != nil || !slices.Equal(names, []string{"data", "os"}) {
		t.Fatalf("exports %q, %v; want data and os", names, err)
	}
	for name, image := range images {
		uri := "nbd+unix:///" + name + "?socket=" + sock
		c, err := nbd.Dial(ctx, uri, nbd.ClientOptions{MetaContexts: []string{nbd.BaseAllocation}})
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, c.Size())
		if err := c.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, image) {
			t.Errorf("%s: %v, or it reads other bytes than the image's", name, err)
		}
		extents, err := c.BlockStatus(ctx, nbd.BaseAllocation, 0, c.Size())
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for off := 0; off < len(image); off += bs {
			block := image[off:min(off+bs, len(image))]
			if bytes.Equal(block, make([]byte, len(block))) {
				want = append(want, fmt.Sprint(off))
			}
		}
		var holes, runs []string
		for _, e := range extents {
			if e.Flags == nbd.StateHole|nbd.StateZero {
				runs = append(runs, fmt.Sprint(e.Offset))
				for off := e.Offset; off < e.Offset+e.Length; off += bs {
					holes = append(holes, fmt.Sprint(off))
				}
			}
		}
		if !slices.Equal(holes, want) {
			t.Errorf("%s: holes at %v, want the zero blocks at %v", name, holes, want)
		}
		out, err := exec.Command("qemu-img", "map", "--output=json", "-f", "raw", uri).CombinedOutput()
		if err != nil {
			t.Fatalf("qemu-img map %s: %v: %s", uri, err, out)
		}
		var entries []struct {
			Start int64
			Data  bool
		}
		json.Unmarshal(out, &entries)
		var qemuHoles []string
		for _, e := range entries {
			if !e.Data {
				qemuHoles = append(qemuHoles, fmt.Sprint(e.Start))
			}
		}
		if !slices.Equal(qemuHoles, runs) {
			t.Errorf("%s: qemu-img map sees holes at %v, want %v: %s", name, qemuHoles, runs, out)
		}
	}
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Errorf("serve-nbd after SIGINT: %v: %s", err, stderr.Bytes())
	}
}
