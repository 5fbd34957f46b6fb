package objserver

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
)

// The emulator's well-known account and key (published in Azurite's and
// Azure's documents; not a secret).
const (
	azuriteAccount = "devstoreaccount1"
	azuriteKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// azuriteInstallDir is where .ci/run installs Azurite.
const azuriteInstallDir = "/root/.cache/diskpoint-azurite"

// Azurite is an Azurite blob server on 127.0.0.1 at a free port, with its
// data in a new directory.
type Azurite struct {
	// Addr is its blob endpoint's host:port.
	Addr string
	dir  string
	proc *process
}

// FindAzurite returns the azurite-blob program: the one DISKPOINT_AZURITE
// names, azurite-blob on PATH, or where .ci/run installs it. getenv reads
// the environment (nil: os.Getenv). Without one the error wraps
// ErrNoProgram and says how to get one.
func FindAzurite(getenv func(string) string) (string, error) {
	return findProgram(orGetenv(getenv), "DISKPOINT_AZURITE", "azurite-blob",
		[]string{filepath.Join(azuriteInstallDir, "node_modules/.bin/azurite-blob")},
		"set DISKPOINT_AZURITE, put it on PATH, or npm install --prefix "+azuriteInstallDir+" azurite@3")
}

// StartAzurite starts an Azurite blob server for the test t, with its data
// under t's temporary directory, and stops it when t ends. It skips t when
// there is no azurite-blob program, unless CI=true.
func StartAzurite(t testing.TB) *Azurite {
	t.Helper()
	bin, err := FindAzurite(nil)
	var a *Azurite
	if err == nil {
		a, err = LaunchAzurite(context.Background(), bin, t.TempDir())
	}
	Need(t, "Azurite", err)
	t.Cleanup(a.Stop)
	return a
}

// LaunchAzurite starts the azurite-blob program bin with its data and log
// in a new directory under parent ("" means the system's temporary
// directory), and waits until it serves. Stop ends it and removes that
// directory.
func LaunchAzurite(ctx context.Context, bin, parent string) (*Azurite, error) {
	dir, err := os.MkdirTemp(parent, "diskpoint-azurite-")
	if err != nil {
		return nil, err
	}
	a := &Azurite{dir: dir}
	if err := a.launch(ctx, bin); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return a, nil
}

func (a *Azurite) launch(ctx context.Context, bin string) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	_, port, _ := net.SplitHostPort(addr)
	a.Addr = addr
	a.proc, err = start(bin, []string{"--blobHost", "127.0.0.1", "--blobPort", port,
		"--location", filepath.Join(a.dir, "data"), "--skipApiVersionCheck", "--disableTelemetry", "--silent"},
		nil, filepath.Join(a.dir, "azurite.log"))
	if err != nil {
		return err
	}
	// Any answer, even an error status to an unsigned request, means ready.
	answered := func(*http.Response) bool { return true }
	if err := a.proc.waitReady(ctx, "azurite on "+addr, "http://"+addr+"/"+azuriteAccount+"?comp=list", answered, time.Minute); err != nil {
		a.proc.kill()
		return err
	}
	return nil
}

// Stop ends the server (SIGKILL) and removes its data.
func (a *Azurite) Stop() {
	a.proc.kill()
	os.RemoveAll(a.dir)
}

// ConnectionString is the emulator account's connection string, naming
// the server's blob endpoint.
func (a *Azurite) ConnectionString() string { return AzuriteConnectionString(a.Addr) }

// AzuriteConnectionString is the emulator account's connection string for
// a blob endpoint at addr (host:port): Azurite's, or a proxy's in front of
// it.
func AzuriteConnectionString(addr string) string {
	return fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=http://%s/%s;", azuriteAccount, azuriteKey, addr, azuriteAccount)
}

// Env is the environment a client process of the server needs:
// AZURE_STORAGE_CONNECTION_STRING.
func (a *Azurite) Env() []string {
	return []string{"AZURE_STORAGE_CONNECTION_STRING=" + a.ConnectionString()}
}

// URL is the location of PREFIX in container, for -repo:
// azure:CONTAINER:/PREFIX.
func (a *Azurite) URL(containerName, prefix string) string {
	return "azure:" + containerName + ":/" + prefix
}

// MakeContainer makes the container name, or fails t.
func (a *Azurite) MakeContainer(t testing.TB, name string) {
	t.Helper()
	if err := a.CreateContainer(context.Background(), name); err != nil {
		t.Fatal(err)
	}
}

// CreateContainer makes the container name.
func (a *Azurite) CreateContainer(ctx context.Context, name string) error {
	c, err := container.NewClientFromConnectionString(a.ConnectionString(), name, nil)
	if err == nil {
		_, err = c.Create(ctx, nil)
	}
	if err != nil {
		return fmt.Errorf("create container %s: %w", name, err)
	}
	return nil
}
