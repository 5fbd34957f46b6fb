package benchutil

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// TouchAndFree writes to n bytes of new memory and gives them back. On the
// project's VM the balloon hands memory free for 2 s back to the host and
// takes it back one host fault at a time, so a step that fills the page
// cache (a restore) ran twice as fast right after memory was freed: doing
// this before every step starts each one with memory the host has just
// backed. Run it where its peak RSS counts against nobody measured (a
// child's ru_maxrss starts from its parent's high-water mark).
func TouchAndFree(n int64) error {
	mem, err := unix.Mmap(-1, 0, int(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("touching %d bytes of memory: %w", n, err)
	}
	for i := 0; i < len(mem); i += 4096 {
		mem[i] = 1
	}
	return unix.Munmap(mem)
}
