// Command tiered shows Azure Backup's two tiers with diskpoint: a VM's
// restore points are taken into a local repository (the fast snapshot
// tier), transferred to a vault in an S3 bucket, and the local tier is
// pruned to its newest points; the pruned points are then restored from
// the vault, and the local ones from the local tier without a read of the
// vault.
//
//	go run ./examples/tiered
//
// The vault is the repository location DISKPOINT_VAULT names, such as
// s3:http://127.0.0.1:9000/BUCKET/PREFIX with the credentials in
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (any location diskpoint's
// -repo takes; the bucket must exist): the example works under
// PREFIX/tiered-RUN, new for each run. Without DISKPOINT_VAULT it starts the
// minio program DISKPOINT_MINIO names (or minio on PATH) on 127.0.0.1 at a
// free port, with its data in a temporary directory, and stops it at the
// end.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/chain/location"
	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/internal/objserver"
	"github.com/diskpoint/diskpoint/snapshot"
	"github.com/dustin/go-humanize"
)

func main() {
	if err := run(context.Background(), os.Stdout, os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "tiered:", err)
		os.Exit(1)
	}
}

// The VM: two disks, and how many restore points the local tier keeps.
var disks = []struct {
	name string
	size int64
	mix  demodisk.Mix
}{
	{"os", 24 << 20, demodisk.MixedImage},
	{"data", 8 << 20, demodisk.Mix{Holes: 30, Text: 30, Random: 30, Repeats: 10}},
}

const keepLocal = 2

// run is the example; getenv is where it reads DISKPOINT_VAULT,
// DISKPOINT_MINIO and the vault's credentials.
func run(ctx context.Context, out io.Writer, getenv func(string) string) error {
	work, err := os.MkdirTemp("", "diskpoint-tiered-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	vaultStore, where, stop, err := openVaultStore(ctx, getenv)
	if err != nil {
		return err
	}
	defer stop()
	counted := &readCounter{Store: vaultStore}
	vault, err := snapshot.InitStore(ctx, counted, snapshot.InitOptions{})
	if err != nil {
		return fmt.Errorf("vault %s: %w", where, err)
	}
	defer vault.Close()
	local, err := snapshot.Init(ctx, filepath.Join(work, "local"), snapshot.InitOptions{})
	if err != nil {
		return err
	}
	defer local.Close()
	fmt.Fprintf(out, "local tier: %s\nvault:      %s\n", filepath.Join(work, "local"), where)
	fmt.Fprintf(out, "VM web-vm, disks %s; the local tier keeps its newest %d restore points, the vault every one\n\n", diskList(), keepLocal)

	var sources []snapshot.DiskSource
	for i, d := range disks {
		p := filepath.Join(work, d.name+".img")
		if err := demodisk.Create(p, d.size, uint64(i+1), d.mix); err != nil {
			return err
		}
		sources = append(sources, snapshot.DiskSource{Name: d.name, Path: p})
	}
	vm, err := local.Collection("web-vm")
	if err != nil {
		return err
	}

	// 1. Four restore points, taken locally, with a running VM's changes
	// between them.
	hashes := map[string]map[string][32]byte{} // point ID -> disk -> BLAKE3 of its bytes
	var ids []string
	takePoint := func(round int) error {
		if round > 0 {
			for i, s := range sources {
				if _, err := demodisk.Scatter(s.Path, 0.02, uint64(10*round+i)); err != nil {
					return err
				}
			}
		}
		rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: sources})
		if err != nil {
			return err
		}
		hashes[rp.ID] = map[string][32]byte{}
		for _, s := range sources {
			if hashes[rp.ID][s.Name], err = demodisk.Hash(s.Path); err != nil {
				return err
			}
		}
		ids = append(ids, rp.ID)
		fmt.Fprintf(out, "took restore point %s locally\n", rp.ID)
		return nil
	}
	for round := range 4 {
		if err := takePoint(round); err != nil {
			return err
		}
	}

	// 2. Transfer them to the vault and prune the local tier to the newest
	// two: only the points now in the vault go.
	if err := transfer(ctx, out, local, vault, nil); err != nil {
		return err
	}

	// 3. One more restore point; the next transfer moves only what changed,
	// and runs the local tier's GC after its prune.
	if err := takePoint(4); err != nil {
		return err
	}
	if err := transfer(ctx, out, local, vault, &snapshot.GCOptions{}); err != nil {
		return err
	}
	localIDs, err := pointIDs(ctx, local)
	if err != nil {
		return err
	}
	vaultIDs, err := pointIDs(ctx, vault)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nthe local tier holds %d restore points, the vault %d\n\n", len(localIDs), len(vaultIDs))
	if len(localIDs) != keepLocal || len(vaultIDs) != len(ids) {
		return fmt.Errorf("the local tier holds %v and the vault %v; want the newest %d and all %d", localIDs, vaultIDs, keepLocal, len(ids))
	}

	// 4. Restore every point, from whichever tier holds it, local first.
	tiers := &snapshot.Tiers{Local: local, Vault: vault}
	for _, id := range ids {
		before := counted.reads.Load()
		start := time.Now()
		var tier snapshot.Tier
		var restored int64
		for _, s := range sources {
			target := filepath.Join(work, "restored-"+s.Name+".img")
			stats, t, err := tiers.RestoreDisk(ctx, "web-vm", snapshot.RestoreOptions{Point: id, Disk: s.Name, Path: target, Overwrite: true})
			if err != nil {
				return err
			}
			got, err := demodisk.Hash(target)
			if err != nil {
				return err
			}
			if got != hashes[id][s.Name] {
				return fmt.Errorf("restore point %s disk %s from the %s tier: the restored image differs from the original", id, s.Name, t)
			}
			tier, restored = t, restored+stats.Size
		}
		reads := counted.reads.Load() - before
		if tier == snapshot.TierLocal && reads != 0 {
			return fmt.Errorf("restore point %s came from the local tier, yet the vault was read %d times", id, reads)
		}
		fmt.Fprintf(out, "restored %s from the %-5s tier: %s in %s, bit-exact; %d reads of the vault\n",
			id, tier, size(restored), time.Since(start).Round(time.Millisecond), reads)
	}

	// 5. The vault re-reads and re-hashes every chunk it holds.
	report, err := vault.Verify(ctx, snapshot.VerifyOptions{})
	if err != nil {
		return err
	}
	if !report.OK() {
		return fmt.Errorf("verify the vault: damage %+v", report.Damage)
	}
	fmt.Fprintf(out, "\nverify of the vault: %d restore points, %d packs, all intact\n", report.RestorePoints, report.Packs)
	return nil
}

// transfer runs snapshot.Transfer, keeping keepLocal points locally, and
// says what it did.
func transfer(ctx context.Context, out io.Writer, local, vault *snapshot.Repository, gc *snapshot.GCOptions) error {
	start := time.Now()
	result, err := snapshot.Transfer(ctx, local, vault, snapshot.TransferOptions{PruneLocal: true, KeepLocal: keepLocal, GC: gc})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\ntransfer to the vault in %s:\n", time.Since(start).Round(time.Millisecond))
	for _, p := range result.Transferred {
		fmt.Fprintf(out, "  copied %s: %s moved (%s stored)\n", p.ID, size(p.Bytes), size(p.Stored))
	}
	for _, p := range result.Pruned {
		fmt.Fprintf(out, "  pruned %s from the local tier (the vault holds it)\n", p.ID)
	}
	if result.GC != nil {
		fmt.Fprintf(out, "  local gc reclaimed %s\n", size(max(result.GC.BytesReclaimed(), 0)))
	}
	return nil
}

// openVaultStore opens the store of the vault: under DISKPOINT_VAULT, or
// in a MinIO started for the run. stop ends what it started.
func openVaultStore(ctx context.Context, getenv func(string) string) (chain.Store, string, func(), error) {
	run := fmt.Sprintf("tiered-%s-%d", time.Now().UTC().Format("20060102-150405"), os.Getpid())
	if v := getenv("DISKPOINT_VAULT"); v != "" {
		loc, err := location.Parse(v)
		if err != nil {
			return nil, "", nil, err
		}
		if loc.IsLocal() {
			loc.Path = filepath.Join(loc.Path, run)
		} else {
			loc.Prefix = path.Join(loc.Prefix, run)
		}
		store, err := loc.NewStore(getenv)
		if err != nil {
			return nil, "", nil, err
		}
		return store, loc.String(), func() { store.Close() }, nil
	}
	bin, err := objserver.FindMinIO(getenv)
	if errors.Is(err, objserver.ErrNoProgram) {
		return nil, "", nil, errors.New("no vault: set DISKPOINT_VAULT to a repository location (s3:http://HOST:PORT/BUCKET/PREFIX, with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), or DISKPOINT_MINIO to a minio program to start (go install " + objserver.MinIOVersion + ")")
	}
	if err != nil {
		return nil, "", nil, err
	}
	const bucket = "diskpoint-tiered"
	server, err := objserver.LaunchMinIO(ctx, bin, "")
	if err != nil {
		return nil, "", nil, err
	}
	if err := server.CreateBucket(ctx, bucket); err != nil {
		server.Stop()
		return nil, "", nil, err
	}
	loc, err := location.Parse(fmt.Sprintf("s3:http://%s/%s/%s", server.Endpoint, bucket, run))
	if err == nil {
		var store chain.Store
		if store, err = loc.NewStore(server.Getenv); err == nil {
			return store, loc.String() + " (a MinIO started for this run)", func() { store.Close(); server.Stop() }, nil
		}
	}
	server.Stop()
	return nil, "", nil, err
}

// pointIDs lists the restore points of web-vm in repo.
func pointIDs(ctx context.Context, repo *snapshot.Repository) ([]string, error) {
	c, err := repo.Collection("web-vm")
	if err != nil {
		return nil, err
	}
	points, err := c.List(ctx)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, rp := range points {
		ids = append(ids, rp.ID)
	}
	return ids, nil
}

// readCounter counts the reads of the vault's store, to show that a restore
// from the local tier reads none.
type readCounter struct {
	chain.Store
	reads atomic.Int64
}

func (s *readCounter) Get(ctx context.Context, name string) ([]byte, error) {
	s.reads.Add(1)
	return s.Store.Get(ctx, name)
}

func (s *readCounter) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	s.reads.Add(1)
	return s.Store.ReadAt(ctx, name, p, off)
}

func (s *readCounter) List(ctx context.Context, prefix string, fn func(chain.ObjectInfo) error) error {
	s.reads.Add(1)
	return s.Store.List(ctx, prefix, fn)
}

func (s *readCounter) Stat(ctx context.Context, name string) (chain.ObjectInfo, error) {
	s.reads.Add(1)
	return s.Store.Stat(ctx, name)
}

// diskList names the VM's disks and their sizes: "os (24 MiB) and data (8.0 MiB)".
func diskList() string {
	var names []string
	for _, d := range disks {
		names = append(names, fmt.Sprintf("%s (%s)", d.name, size(d.size)))
	}
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

func size(n int64) string { return humanize.IBytes(uint64(n)) }
