// Package profiling writes the profiles a diskpoint process is asked for
// through the environment: DISKPOINT_CPUPROFILE (a CPU profile),
// DISKPOINT_TRACE (an execution trace, which also shows where the process
// waited) and DISKPOINT_MEMPROFILE (the heap at the end). The CLI and the
// benchmarks' child processes share it, so a step is profiled in the
// process that measures it, the same way as a command.
package profiling
