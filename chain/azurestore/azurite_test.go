package azurestore_test

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain/azurestore"
	"github.com/diskpoint/diskpoint/internal/objserver"
)

// The tests run against a real Azurite (Microsoft's Azure Storage
// emulator) that they start on 127.0.0.1, once for the package
// (objserver.SharedAzurite), with its data in a temporary directory; each
// test works in a container of its own.

func TestMain(m *testing.M) {
	code := m.Run()
	objserver.StopShared()
	os.Exit(code)
}

var containerSeq atomic.Int64

// newContainer makes a new, empty container and returns its name.
func newContainer(t *testing.T, srv *objserver.Azurite) string {
	t.Helper()
	name := fmt.Sprintf("test-%d-%d", os.Getpid(), containerSeq.Add(1))
	srv.MakeContainer(t, name)
	return name
}

func storeOptions(srv *objserver.Azurite, containerName, prefix string) azurestore.Options {
	return azurestore.Options{
		ConnectionString: srv.ConnectionString(),
		Container:        containerName,
		Prefix:           prefix,
		Insecure:         true,
		RetryDelay:       50 * time.Millisecond,
	}
}

// newStore returns a store in a new container, closed at the test's end.
func newStore(t *testing.T, mutate func(*azurestore.Options)) *azurestore.Store {
	t.Helper()
	srv := objserver.SharedAzurite(t)
	opts := storeOptions(srv, newContainer(t, srv), "repo/one")
	if mutate != nil {
		mutate(&opts)
	}
	s, err := azurestore.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
