package profiling

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
)

// FromEnv starts the CPU profile and the execution trace the environment
// asks for. The returned stop ends them and writes the heap profile; call
// it once, at the end of the work to profile. A profile that cannot be
// written is reported to report and left out; the work goes on.
func FromEnv(report func(error)) (stop func()) {
	stopCPU := start(report, "DISKPOINT_CPUPROFILE", pprof.StartCPUProfile, pprof.StopCPUProfile)
	stopTrace := start(report, "DISKPOINT_TRACE", trace.Start, trace.Stop)
	return func() {
		stopTrace()
		stopCPU()
		writeHeap(report, "DISKPOINT_MEMPROFILE")
	}
}

// start begins a recording into the file the variable names, if set.
func start(report func(error), variable string, begin func(io.Writer) error, end func()) (stop func()) {
	path := os.Getenv(variable)
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		if err = begin(f); err != nil {
			f.Close()
		}
	}
	if err != nil {
		report(fmt.Errorf("%s: %w", variable, err))
		return func() {}
	}
	return func() {
		end()
		if err := f.Close(); err != nil {
			report(fmt.Errorf("%s: %w", variable, err))
		}
	}
}

// writeHeap writes what the heap holds now to the file the variable names,
// if set (go tool pprof -sample_index=inuse_space FILE).
func writeHeap(report func(error), variable string) {
	path := os.Getenv(variable)
	if path == "" {
		return
	}
	runtime.GC() // the profile shows the heap as of the last collection
	f, err := os.Create(path)
	if err == nil {
		err = pprof.WriteHeapProfile(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		report(fmt.Errorf("%s: %w", variable, err))
	}
}
