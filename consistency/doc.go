// Package consistency makes restore points consistent: it quiesces
// applications and file systems, captures every disk at one instant, and
// always thaws.
//
// A restore point is taken in one of three modes ([Mode]):
//
//   - crash: all disks captured at one instant, as after a power loss;
//   - filesystem: file systems frozen while the disks are captured;
//   - application: applications quiesced first (pre scripts, in-process
//     hooks), then file systems frozen.
//
// A restore point records the mode it achieved, never the mode asked for:
// [Judge] derives it from the hooks that ran and succeeded and from how the
// disks were captured. Without application hooks nothing is
// application-consistent, without file-system freezes nothing is
// file-system-consistent, and disks not captured at one instant (read while
// in use, or captured one after another with nothing holding them still)
// are [Inconsistent], a mode recorded but never asked for.
//
// What makes a mode real is its [Hook]s: [ScriptHook] (pre and post scripts,
// configured like Azure's VMSnapshotScriptPluginConfig.json), [FSFreezeHook]
// (Linux FIFREEZE/FITHAW) and [FuncHook] (a function in the same process:
// a database flushing itself, or a hypervisor pausing a VM's I/O).
// [PlanHooks] makes them from an operator's settings as Azure Backup does:
// a script config, the file systems to freeze, the failure policy.
//
// The [Coordinator] runs them in order: wait until every hook is ready,
// pre (application) hooks, freeze (file system, then pause hooks), capture,
// thaw, post hooks. Thaw and post hooks always run once their freeze ran: on
// error, on cancellation, on panic, and when the capture overruns the
// maximum freeze time, enforced by a timer that does not wait for the
// capture to return. When application hooks fail, the [Policy] decides,
// as Azure does: fall back to a file-system-consistent restore point (and
// skip application hooks for the next few requests), fail, or skip.
package consistency
