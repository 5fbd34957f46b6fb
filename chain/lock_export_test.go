package chain

import (
	"context"
	"time"
)

// SetLockTiming sets how often locks are refreshed, when they go stale and
// how long a lock taker settles, for a test that cannot wait minutes; the
// returned function restores the previous values. Locks taken before the
// call keep the timing they were taken with.
func SetLockTiming(refreshEach, staleAfter, settle time.Duration) (restore func()) {
	oldRefresh, oldStale, oldSettle := lockRefreshEach, LockStaleAfter, lockSettle
	lockRefreshEach, LockStaleAfter, lockSettle = refreshEach, staleAfter, settle
	return func() { lockRefreshEach, LockStaleAfter, lockSettle = oldRefresh, oldStale, oldSettle }
}

// SetGarbageClockSkew sets the clock-skew margin of garbage records for a
// test; the returned function restores it.
func SetGarbageClockSkew(d time.Duration) (restore func()) {
	old := garbageClockSkew
	garbageClockSkew = d
	return func() { garbageClockSkew = old }
}

// HostTag is this host's and process space's tag in temp file names.
func HostTag() string { return hostTag() }

// ProcessSpace is what this process writes as a lock's process_space.
func ProcessSpace() string { return processSpace() }

// SetLockSettleWait replaces how a lock taker waits before its second look
// (on a store without linearizable listing), for a test that counts the
// waits or acts during one; the returned function restores it.
func SetLockSettleWait(wait func(ctx context.Context, d time.Duration) error) (restore func()) {
	old := lockSettleWait
	lockSettleWait = wait
	return func() { lockSettleWait = old }
}
