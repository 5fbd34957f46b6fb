package objserver

import (
	"context"
	"sync"
	"testing"
)

// A test binary whose tests all want a server starts one and shares it:
// starting MinIO or Azurite takes seconds, a bucket or container per test
// keeps the tests apart.
var (
	sharedMinIO   shared[*MinIO]
	sharedAzurite shared[*Azurite]
)

// shared is a server started on first use and kept for the test binary.
type shared[S interface{ Stop() }] struct {
	once    sync.Once
	server  S
	err     error
	started bool
}

func (s *shared[S]) get(t testing.TB, name string, launch func() (S, error)) S {
	t.Helper()
	s.once.Do(func() {
		s.server, s.err = launch()
		s.started = s.err == nil
	})
	Need(t, name, s.err)
	return s.server
}

func (s *shared[S]) stop() {
	if s.started {
		s.server.Stop()
	}
}

// SharedMinIO returns the MinIO the tests of this test binary share,
// starting it on first use (skipping t as StartMinIO does). The binary's
// TestMain calls StopShared after m.Run.
func SharedMinIO(t testing.TB) *MinIO {
	t.Helper()
	return sharedMinIO.get(t, "MinIO", func() (*MinIO, error) {
		bin, err := FindMinIO(nil)
		if err != nil {
			return nil, err
		}
		return LaunchMinIO(context.Background(), bin, "")
	})
}

// SharedAzurite returns the Azurite the tests of this test binary share,
// starting it on first use (skipping t as StartAzurite does). The binary's
// TestMain calls StopShared after m.Run.
func SharedAzurite(t testing.TB) *Azurite {
	t.Helper()
	return sharedAzurite.get(t, "Azurite", func() (*Azurite, error) {
		bin, err := FindAzurite(nil)
		if err != nil {
			return nil, err
		}
		return LaunchAzurite(context.Background(), bin, "")
	})
}

// StopShared stops the servers SharedMinIO and SharedAzurite started, and
// removes their data.
func StopShared() {
	sharedMinIO.stop()
	sharedAzurite.stop()
}
