package snapshot_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/consistency"
	"github.com/diskpoint/diskpoint/snapshot"
)

// exampleDisk writes a small disk image whose 64 KiB blocks hold their own
// number, and returns its path.
func exampleDisk(dir, name string, blocks int) string {
	image := make([]byte, blocks*chain.DefaultBlockSize)
	for i := range blocks {
		copy(image[i*chain.DefaultBlockSize:], fmt.Sprintf("block %d of %s", i, name))
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, image, 0o600); err != nil {
		log.Fatal(err)
	}
	return path
}

// Take a restore point of a VM's disks, then restore one and check it.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "diskpoint-example-")
	defer os.RemoveAll(dir)

	repo, err := snapshot.Init(ctx, filepath.Join(dir, "repo"), snapshot.InitOptions{})
	if err != nil {
		log.Fatal(err)
	}
	vm, err := repo.Collection("web01")
	if err != nil {
		log.Fatal(err)
	}
	osDisk := exampleDisk(dir, "os.img", 16)
	data := exampleDisk(dir, "data.img", 8)
	rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{
		{Name: "os", Path: osDisk},
		{Name: "data", Path: data},
	}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("disks:", len(rp.Disks))

	out := filepath.Join(dir, "data.restored")
	if _, err := vm.RestoreDisk(ctx, snapshot.RestoreOptions{Point: rp.ID, Disk: "data", Path: out}); err != nil {
		log.Fatal(err)
	}
	fmt.Println("bit-exact:", sameFile(data, out))
	// Output:
	// disks: 2
	// bit-exact: true
}

// A repository is opened again by its directory (OpenWithKey for an
// encrypted one); its collections are the VMs it holds points of.
func ExampleOpen() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "diskpoint-example-")
	defer os.RemoveAll(dir)
	if _, err := snapshot.Init(ctx, dir, snapshot.InitOptions{}); err != nil {
		log.Fatal(err)
	}

	repo, err := snapshot.Open(ctx, dir)
	if err != nil {
		log.Fatal(err)
	}
	defer repo.Close()
	fmt.Println("block size:", repo.Config().BlockSize)
	// Output:
	// block size: 65536
}

// Hooks quiesce what runs on the disks while they are captured. A
// consistency.FuncHook wraps functions; a hook of your own implements
// consistency.Hook. Thaw always runs once Freeze has.
func ExampleCollection_Create_hooks() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "diskpoint-example-")
	defer os.RemoveAll(dir)
	repo, _ := snapshot.Init(ctx, filepath.Join(dir, "repo"), snapshot.InitOptions{})
	vm, _ := repo.Collection("db01")

	database := &consistency.FuncHook{
		HookName:   "postgres",
		HookLevel:  consistency.ApplicationLevel,
		FreezeFunc: func(context.Context) error { fmt.Println("checkpoint and hold writes"); return nil },
		ThawFunc:   func(context.Context) error { fmt.Println("release writes"); return nil },
	}
	_, err := vm.Create(ctx, snapshot.CreateOptions{
		Disks:       []snapshot.DiskSource{{Name: "pgdata", Path: exampleDisk(dir, "pgdata.img", 4)}},
		Consistency: consistency.Application,
		Hooks:       []consistency.Hook{database},
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// checkpoint and hold writes
	// release writes
}

// OpenDisk serves a disk of a restore point as an io.ReaderAt, without
// restoring it: for file-level recovery, or an NBD export.
func ExampleCollection_OpenDisk() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "diskpoint-example-")
	defer os.RemoveAll(dir)
	repo, _ := snapshot.Init(ctx, filepath.Join(dir, "repo"), snapshot.InitOptions{})
	vm, _ := repo.Collection("web01")
	rp, _ := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "os", Path: exampleDisk(dir, "os.img", 8)}}})

	disk, err := vm.OpenDisk(ctx, rp.ID, "os", snapshot.ReaderOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer disk.Close()
	buf := make([]byte, len("block 3 of os.img"))
	if _, err := disk.ReadAt(buf, 3*chain.DefaultBlockSize); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s (disk of %d bytes)\n", buf, disk.Size())
	// Output:
	// block 3 of os.img (disk of 524288 bytes)
}

// Diff lists the byte ranges that differ between two restore points of a
// disk, from their block maps alone: what an incremental replica or a
// changed-block-tracking consumer needs.
func ExampleCollection_Diff() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "diskpoint-example-")
	defer os.RemoveAll(dir)
	repo, _ := snapshot.Init(ctx, filepath.Join(dir, "repo"), snapshot.InitOptions{})
	vm, _ := repo.Collection("web01")
	path := exampleDisk(dir, "os.img", 8)
	first, _ := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "os", Path: path}}})

	f, _ := os.OpenFile(path, os.O_WRONLY, 0)
	f.WriteAt([]byte("changed"), 5*chain.DefaultBlockSize+100)
	f.Close()
	second, _ := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "os", Path: path}}})

	ranges, err := vm.Diff(ctx, snapshot.DiffOptions{Disk: "os", From: first.ID, To: second.ID})
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range ranges {
		fmt.Printf("offset %d, %d bytes\n", r.Offset, r.Length)
	}
	// Output:
	// offset 327680, 65536 bytes
}

// Copy sends a restore point to another repository (off-site, say),
// moving only the chunks the target lacks.
func ExampleCollection_Copy() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "diskpoint-example-")
	defer os.RemoveAll(dir)
	local, _ := snapshot.Init(ctx, filepath.Join(dir, "local"), snapshot.InitOptions{})
	offsite, _ := snapshot.Init(ctx, filepath.Join(dir, "offsite"), snapshot.InitOptions{})
	vm, _ := local.Collection("web01")
	rp, _ := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "os", Path: exampleDisk(dir, "os.img", 8)}}})

	target, _ := offsite.Collection("web01")
	copied, _, err := vm.Copy(ctx, rp.ID, target, snapshot.CopyOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("same point:", copied.ID == rp.ID)
	// Output:
	// same point: true
}

// Prune deletes the restore points a retention policy does not keep; a GC
// then reclaims the space only they used.
func ExampleCollection_Prune() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "diskpoint-example-")
	defer os.RemoveAll(dir)
	repo, _ := snapshot.Init(ctx, filepath.Join(dir, "repo"), snapshot.InitOptions{})
	vm, _ := repo.Collection("web01")
	path := exampleDisk(dir, "os.img", 4)
	for range 3 {
		if _, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "os", Path: path}}}); err != nil {
			log.Fatal(err)
		}
	}

	result, err := vm.Prune(ctx, snapshot.PruneOptions{Policy: snapshot.RetentionPolicy{Last: 1}})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := repo.GC(ctx, snapshot.GCOptions{}); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("kept %d, deleted %d\n", len(result.Kept), len(result.Deleted))
	// Output:
	// kept 1, deleted 2
}

// sameFile reports whether two files hold the same bytes.
func sameFile(a, b string) bool {
	x, errA := os.ReadFile(a)
	y, errB := os.ReadFile(b)
	return errA == nil && errB == nil && bytes.Equal(x, y)
}
