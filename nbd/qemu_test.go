package nbd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/diskpoint/diskpoint/internal/systest"
	"github.com/diskpoint/diskpoint/nbd"
)

// qemu-img, an NBD client nobody here wrote, reads an export exactly: over
// TCP and over a Unix socket, several clients at once.
func TestQemuImgReadsExport(t *testing.T) {
	systest.RequireTool(t, "qemu-img", "qemu-utils")
	dir := t.TempDir()
	disk := testDisk(5<<20 + 4096) // whole sectors, as qemu expects of raw images
	copy(disk[1<<20:], make([]byte, 1<<20))
	image := filepath.Join(dir, "disk.img")
	os.WriteFile(image, disk, 0o600)
	f, _ := os.Open(image)
	defer f.Close()
	export := &nbd.Export{Name: "vm-disk", Size: int64(len(disk)), Disk: f}

	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "nbd.sock")
	unix, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	srv := &nbd.Server{Exports: map[string]*nbd.Export{export.Name: export}}
	for _, l := range []net.Listener{tcp, unix} {
		wg.Go(func() { srv.Serve(ctx, l) })
	}
	defer func() { cancel(); wg.Wait() }()
	urls := []string{
		fmt.Sprintf("nbd://%s/vm-disk", tcp.Addr()),
		fmt.Sprintf("nbd+unix:///vm-disk?socket=%s", sock),
	}

	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal([]byte(systest.Run(t, "qemu-img", "info", "--output=json", urls[0])), &info); err != nil || info.VirtualSize != int64(len(disk)) {
		t.Fatalf("qemu-img info: size %d, %v; want %d", info.VirtualSize, err, len(disk))
	}
	var cwg sync.WaitGroup
	for i := range 4 { // concurrent clients, both transports
		cwg.Go(func() {
			out := filepath.Join(dir, fmt.Sprintf("copy%d.img", i))
			url := urls[i%2]
			if b, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "raw", url, out).CombinedOutput(); err != nil {
				t.Errorf("qemu-img convert %s: %v\n%s", url, err, b)
				return
			}
			if got, _ := os.ReadFile(out); !bytes.Equal(got, disk) {
				t.Errorf("qemu-img convert %s: copy differs", url)
			}
		})
	}
	cwg.Wait()
	systest.Run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", urls[1], image)
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "raw", fmt.Sprintf("nbd://%s/no-such-disk", tcp.Addr()), filepath.Join(dir, "x")).CombinedOutput(); err == nil {
		t.Errorf("qemu-img read an export that does not exist: %s", out)
	}
}
