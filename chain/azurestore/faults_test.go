package azurestore_test

import (
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/chain/azurestore"
	"github.com/diskpoint/diskpoint/chain/internal/faultproxy"
	"github.com/diskpoint/diskpoint/chain/internal/objstoretest"
	"github.com/diskpoint/diskpoint/internal/objserver"
)

// proxiedStore returns a store that reaches Azurite through a fault
// proxy, and its options.
func proxiedStore(t *testing.T, mutate func(*azurestore.Options)) (*azurestore.Store, *faultproxy.Proxy, azurestore.Options) {
	t.Helper()
	srv := objserver.SharedAzurite(t)
	p, err := faultproxy.New(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	opts := storeOptions(srv, newContainer(t, srv), "repo")
	opts.ConnectionString = objserver.AzuriteConnectionString(p.Addr())
	opts.RequestTimeout = time.Second // a stall is found in a second
	if mutate != nil {
		mutate(&opts)
	}
	s, err := azurestore.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, p, opts
}

// Every operation survives a few requests that meet each fault: the
// request is retried and the operation succeeds, and what it wrote is
// there once.
func TestFaultsAreRetried(t *testing.T) {
	objstoretest.FaultsAreRetried(t, func(t *testing.T) (chain.Store, *faultproxy.Proxy) {
		s, p, _ := proxiedStore(t, nil)
		return s, p
	})
}

// A fault that does not pass fails the operation with an error wrapping
// ErrTransient, soon, and leaves no object behind.
func TestPersistentFaultFailsCleanly(t *testing.T) {
	objstoretest.PersistentFaultFailsCleanly(t, func(t *testing.T) (chain.Store, *faultproxy.Proxy) {
		s, p, _ := proxiedStore(t, func(o *azurestore.Options) { o.MaxRetries = 3 })
		return s, p
	})
}

// A repository on Azurite survives faults (see
// objstoretest.RepositoryUnderFaults); it is read back past the proxy.
func TestRepositoryUnderFaults(t *testing.T) {
	var opts azurestore.Options
	objstoretest.RepositoryUnderFaults(t, func(t *testing.T) (chain.Store, *faultproxy.Proxy) {
		s, p, o := proxiedStore(t, func(o *azurestore.Options) { o.MaxRetries = 3; o.RequestTimeout = 10 * time.Second })
		opts = o
		return s, p
	}, func(t *testing.T) chain.Store {
		direct := opts
		direct.ConnectionString = objserver.SharedAzurite(t).ConnectionString()
		s2, err := azurestore.New(direct)
		if err != nil {
			t.Fatal(err)
		}
		return s2
	})
}
