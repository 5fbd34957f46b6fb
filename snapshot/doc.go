// Package snapshot is diskpoint's API: restore points of virtual-machine
// disks.
//
// A [Repository] holds [Collection]s, one per VM (or any named group of
// disks). [Collection.Create] takes a [RestorePoint] of one or more disks:
// the first stores every block that is not zero, each later one only the
// blocks that changed, yet every restore point is complete on its own and
// can be restored ([Collection.RestoreDisk]) or deleted ([Collection.Delete])
// without touching the others. [Repository.GC] reclaims what no restore
// point needs; [Repository.Verify] checks every byte.
//
//	repo, _ := snapshot.Init(ctx, "/backups/repo", snapshot.InitOptions{})
//	vm, _ := repo.Collection("vm1")
//	rp, _ := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{
//		{Name: "os", Path: "/images/vm1-os.img"},
//		{Name: "data", Path: "/images/vm1-data.img"},
//	}})
//	_, _ = vm.RestoreDisk(ctx, snapshot.RestoreOptions{Point: rp.ID, Disk: "data", Path: "/tmp/data.img"})
//
// [Transfer] copies the restore points a vault lacks from a fast local
// repository (Azure Backup's snapshot tier) to the vault, and prunes the
// local tier to its newest points; [Tiers] restores a point from whichever
// tier holds it, local first.
// [Collection.OpenDisk] reads any disk restore point at any offset, and
// [Mount] shows every restore point of a repository as files, read-only,
// with FUSE (COLLECTION/POINT-ID/DISK.img), for file-level restore.
//
// The package builds on blockdiff (reading disks and finding changes) and
// chain (the repository format).
package snapshot
