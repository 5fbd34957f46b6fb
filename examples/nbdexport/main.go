// Command nbdexport serves one disk of a restore point read-only over NBD,
// for instant access: boot a VM from it, or mount its file systems, without
// restoring it first.
//
//	go run ./examples/nbdexport -repo DIR -collection NAME -point latest -disk os -listen 127.0.0.1:10809
//	qemu-img info nbd://127.0.0.1:10809/os
//	nbd-client -N os 127.0.0.1 10809 /dev/nbd0 && mount -o ro /dev/nbd0p1 /mnt
//
// It is the library's instant-access path in a few lines: OpenDisk gives an
// io.ReaderAt over the restore point, and an nbd.Server exports it.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/nbd"
	"github.com/diskpoint/diskpoint/snapshot"
)

func main() {
	repoDir := flag.String("repo", "", "repository directory")
	collection := flag.String("collection", "", "collection name")
	point := flag.String("point", "latest", "restore point ID, or latest")
	disk := flag.String("disk", "", "disk name")
	listen := flag.String("listen", "127.0.0.1:10809", "TCP address to listen on")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *repoDir, *collection, *point, *disk, *listen); err != nil {
		fmt.Fprintln(os.Stderr, "nbdexport:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, repoDir, collection, point, disk, listen string) error {
	key, err := keyFromEnvironment()
	if err != nil {
		return err
	}
	repo, err := snapshot.OpenWithKey(ctx, repoDir, key)
	if err != nil {
		return err
	}
	c, err := repo.Collection(collection)
	if err != nil {
		return err
	}
	r, err := c.OpenDisk(ctx, point, disk, snapshot.ReaderOptions{})
	if err != nil {
		return err
	}
	defer r.Close() // releases its reader lock, so GC may reclaim what it kept for us
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	fmt.Printf("serving %s read-only at nbd://%s/%s (Ctrl-C stops)\n", disk, l.Addr(), disk)
	srv := &nbd.Server{Exports: map[string]*nbd.Export{disk: {Name: disk, Size: r.Size(), Disk: r}}}
	return srv.Serve(ctx, l)
}

// keyFromEnvironment returns an encrypted repository's key from
// DISKPOINT_KEY (64 hex digits) or the file DISKPOINT_KEY_FILE names, or nil
// when neither is set. (The diskpoint CLI also runs DISKPOINT_KEY_COMMAND.)
func keyFromEnvironment() ([]byte, error) {
	text, from := os.Getenv("DISKPOINT_KEY"), "DISKPOINT_KEY"
	if path := os.Getenv("DISKPOINT_KEY_FILE"); text == "" && path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("DISKPOINT_KEY_FILE: %w", err)
		}
		text, from = string(data), "DISKPOINT_KEY_FILE "+path
	}
	if text == "" {
		return nil, nil
	}
	key, err := chain.ParseKey(text)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", from, err)
	}
	return key, nil
}
