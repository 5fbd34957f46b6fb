package objstoretest

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

// Repo is a repository initialised on a store, with a demo disk image in a
// temporary directory and the collection vm1 that restore points of it go
// into.
type Repo struct {
	Repo *snapshot.Repository
	VM   *snapshot.Collection
	Dir  string // the temporary directory holding Img
	Img  string // the disk image restore points are taken of
}

// InitOptions are the options the backend tests initialise a repository
// with: format 2 when DISKPOINT_TEST_FORMAT=2, the default otherwise.
func InitOptions() snapshot.InitOptions {
	opts := snapshot.InitOptions{}
	if os.Getenv("DISKPOINT_TEST_FORMAT") == "2" {
		opts.Format = chain.FormatVersion2
	}
	return opts
}

// NewRepo writes a demo disk of size bytes from seed, initialises a
// repository on s and opens its collection vm1.
func NewRepo(ctx context.Context, t *testing.T, s chain.Store, size int64, seed uint64) *Repo {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := demodisk.Create(img, size, seed, demodisk.MixedImage); err != nil {
		t.Fatal(err)
	}
	repo, err := snapshot.InitStore(ctx, s, InitOptions())
	if err != nil {
		t.Fatal(err)
	}
	vm, err := repo.Collection("vm1")
	if err != nil {
		t.Fatal(err)
	}
	return &Repo{Repo: repo, VM: vm, Dir: dir, Img: img}
}

// Create takes a restore point of the image and returns it with the bytes
// the image held when it was taken.
func (r *Repo) Create(ctx context.Context, t *testing.T) (*snapshot.RestorePoint, []byte, error) {
	t.Helper()
	want, err := os.ReadFile(r.Img)
	if err != nil {
		t.Fatal(err)
	}
	rp, err := r.VM.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "os", Path: r.Img}}})
	return rp, want, err
}

// Point is a restore point and the bytes its disk held.
type Point struct {
	ID   string
	Want []byte
}

// CheckRestores restores each point's disk of vm into dir and fails the
// test unless it is bit-exact.
func CheckRestores(ctx context.Context, t *testing.T, vm *snapshot.Collection, dir string, points []Point) {
	t.Helper()
	target := filepath.Join(dir, "restored.img")
	for _, pt := range points {
		if _, err := vm.RestoreDisk(ctx, snapshot.RestoreOptions{Point: pt.ID, Disk: "os", Path: target, Overwrite: true}); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(target)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, pt.Want) {
			t.Fatalf("restore point %s differs from the disk it was taken of", pt.ID)
		}
	}
}

// CheckPoints fails the test unless vm holds exactly the restore points
// ids, in that order.
func CheckPoints(ctx context.Context, t *testing.T, vm *snapshot.Collection, ids ...string) {
	t.Helper()
	points, err := vm.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ok := len(points) == len(ids)
	for i := 0; ok && i < len(ids); i++ {
		ok = points[i].ID == ids[i]
	}
	if !ok {
		t.Fatalf("restore points %v, want only the two that succeeded", points)
	}
}

// RepositoryRoundTrip checks that a repository lives on the server: two
// restore points are created through one client, then a new client opens
// the repository afresh, restores both bit-exact (the first restore into a
// fresh file, without Overwrite) and verifies it clean. open returns a new
// client on the same place each time it is called.
func RepositoryRoundTrip(t *testing.T, open func(t *testing.T) chain.Store) {
	t.Helper()
	ctx := context.Background()
	r := NewRepo(ctx, t, open(t), 24<<20, 7)
	rp1, want1, err := r.Create(ctx, t)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := demodisk.Scatter(r.Img, 0.01, 99); err != nil {
		t.Fatal(err)
	}
	rp2, want2, err := r.Create(ctx, t)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Repo.Close(); err != nil {
		t.Fatal(err)
	}

	// Open it afresh, with a new client.
	repo, vm := Reopen(ctx, t, open(t))
	defer repo.Close()
	target := filepath.Join(r.Dir, "restored.img")
	if _, err := vm.RestoreDisk(ctx, snapshot.RestoreOptions{Point: rp2.ID, Disk: "os", Path: target}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(target)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want2) {
		t.Fatal("the restored image differs from the disk")
	}
	CheckRestores(ctx, t, vm, r.Dir, []Point{{rp1.ID, want1}, {rp2.ID, want2}})
	report, err := repo.Verify(ctx, snapshot.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !report.OK() || report.RestorePoints != 2 {
		t.Fatalf("verify: %+v", report)
	}
}

// Reopen opens the repository on s and its collection vm1.
func Reopen(ctx context.Context, t *testing.T, s chain.Store) (*snapshot.Repository, *snapshot.Collection) {
	t.Helper()
	repo, err := snapshot.OpenStore(ctx, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := repo.Collection("vm1")
	if err != nil {
		repo.Close()
		t.Fatal(err)
	}
	return repo, vm
}
