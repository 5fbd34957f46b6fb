package chain

import (
	"os"
	"strings"
	"sync"
)

// processSpace names the processes this one can see by PID: this boot of
// the machine and this PID namespace ("" where that cannot be told).
//
// Whether a lock's or temp file's holder still runs is checked by PID only
// within the same space. Two containers can share a host name (host
// networking) and a repository, yet not see each other's processes; there
// "no such process" says nothing about the holder, and taking its lock for
// stale would let a GC sweep beside a live create.
var processSpace = sync.OnceValue(func() string {
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(boot)) + "/" + ns
})
