package azurestore_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/diskpoint/diskpoint/chain/azurestore"
	"github.com/diskpoint/diskpoint/chain/internal/objstoretest"
)

// The tests run against a real Azurite (Microsoft's Azure Storage
// emulator) that they start on 127.0.0.1, once for the package, with its
// data in a temporary directory.

// The emulator's well-known account and key (published in Azurite's and
// Azure's documents; not a secret).
const (
	devAccount = "devstoreaccount1"
	devKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

type azuriteServer struct {
	port   int
	cmd    *exec.Cmd
	exited chan struct{}
	dir    string
}

var (
	serverOnce sync.Once
	server     *azuriteServer
	serverErr  error
	// skipReason is set when there is no azurite-blob: the tests skip
	// locally and fail under CI=true.
	skipReason string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if server != nil {
		server.stop()
	}
	os.Exit(code)
}

// findAzurite returns the azurite-blob command: $DISKPOINT_AZURITE, on
// PATH, or where .ci/run installs it.
func findAzurite() (string, error) {
	if p := os.Getenv("DISKPOINT_AZURITE"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("azurite-blob"); err == nil {
		return p, nil
	}
	p := "/root/.cache/diskpoint-azurite/node_modules/.bin/azurite-blob"
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	return "", errors.New("no azurite-blob (set DISKPOINT_AZURITE, put it on PATH, or npm install --prefix /root/.cache/diskpoint-azurite azurite@3)")
}

func startAzurite() (*azuriteServer, error) {
	bin, err := findAzurite()
	if err != nil {
		skipReason = err.Error()
		return nil, err
	}
	dir, err := os.MkdirTemp("", "diskpoint-azurite-")
	if err != nil {
		return nil, err
	}
	port, err := objstoretest.FreePort()
	if err != nil {
		return nil, err
	}
	s := &azuriteServer{port: port, dir: dir, exited: make(chan struct{})}
	s.cmd = exec.Command(bin, "--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(port),
		"--location", filepath.Join(dir, "data"), "--skipApiVersionCheck", "--disableTelemetry", "--silent")
	logFile, err := os.Create(filepath.Join(dir, "azurite.log"))
	if err != nil {
		return nil, err
	}
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { s.cmd.Wait(); logFile.Close(); close(s.exited) }()
	if err := s.waitReady(time.Minute); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "azurite.log"))
		s.stop()
		return nil, fmt.Errorf("%w; its log:\n%s", err, log)
	}
	return s, nil
}

func (s *azuriteServer) blobEndpoint() string {
	return fmt.Sprintf("http://127.0.0.1:%d/%s", s.port, devAccount)
}

func (s *azuriteServer) connectionString() string { return connectionStringFor(s.port) }

// connectionStringFor is the emulator account's connection string for a
// blob endpoint on 127.0.0.1:port (Azurite's, or a proxy's in front of it).
func connectionStringFor(port int) string {
	return fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=http://127.0.0.1:%d/%s;", devAccount, devKey, port, devAccount)
}

// waitReady polls the blob endpoint until Azurite answers HTTP at all (an
// unsigned request gets an error status, which is enough).
func (s *azuriteServer) waitReady(limit time.Duration) error {
	answered := func(*http.Response) bool { return true }
	return objstoretest.WaitReady("azurite", fmt.Sprintf("azurite on port %d", s.port), s.blobEndpoint()+"?comp=list", answered, s.cmd, s.exited, limit)
}

func (s *azuriteServer) stop() {
	if s.cmd.Process != nil {
		s.cmd.Process.Kill()
		<-s.exited
	}
	os.RemoveAll(s.dir)
}

// needAzurite returns the running server, starting it first if needed. It
// skips the test when there is no azurite-blob, unless CI=true.
func needAzurite(t *testing.T) *azuriteServer {
	t.Helper()
	serverOnce.Do(func() { server, serverErr = startAzurite() })
	objstoretest.NeedServer(t, "Azurite", serverErr, skipReason)
	return server
}

var containerSeq atomic.Int64

// newContainer makes a new, empty container and returns its name.
func newContainer(t *testing.T, srv *azuriteServer) string {
	t.Helper()
	name := fmt.Sprintf("test-%d-%d", os.Getpid(), containerSeq.Add(1))
	c, err := container.NewClientFromConnectionString(srv.connectionString(), name, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(context.Background(), nil); err != nil {
		t.Fatalf("create container %s: %v", name, err)
	}
	return name
}

func storeOptions(srv *azuriteServer, containerName, prefix string) azurestore.Options {
	return azurestore.Options{
		ConnectionString: srv.connectionString(),
		Container:        containerName,
		Prefix:           prefix,
		Insecure:         true,
		RetryDelay:       50 * time.Millisecond,
	}
}

// newStore returns a store in a new container, closed at the test's end.
func newStore(t *testing.T, mutate func(*azurestore.Options)) *azurestore.Store {
	t.Helper()
	srv := needAzurite(t)
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
