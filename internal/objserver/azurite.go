package objserver

import (
	"context"
	"fmt"
	"net"
	"net/http"
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

// Azurite is an Azurite blob server running for one test.
type Azurite struct {
	// Addr is its blob endpoint's host:port on 127.0.0.1.
	Addr string
	proc *process
}

// StartAzurite starts an Azurite blob server with its data in a new
// temporary directory of t, and stops it when t ends. It skips t when
// there is no azurite-blob program, unless CI=true.
func StartAzurite(t testing.TB) *Azurite {
	t.Helper()
	a, err := startAzurite(t)
	need(t, "Azurite", err)
	return a
}

func startAzurite(t testing.TB) (*Azurite, error) {
	bin, err := findProgram("DISKPOINT_AZURITE", "azurite-blob", []string{"/root/.cache/diskpoint-azurite/node_modules/.bin/azurite-blob"},
		"set DISKPOINT_AZURITE, put it on PATH, or npm install --prefix /root/.cache/diskpoint-azurite azurite@3")
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	a := &Azurite{Addr: addr}
	a.proc, err = start(t, bin, []string{"--blobHost", "127.0.0.1", "--blobPort", port,
		"--location", filepath.Join(dir, "data"), "--skipApiVersionCheck", "--disableTelemetry", "--silent"},
		nil, filepath.Join(dir, "azurite.log"))
	if err != nil {
		return nil, err
	}
	// Any answer, even an error status to an unsigned request, means ready.
	answered := func(*http.Response) bool { return true }
	if err := a.proc.waitReady("azurite on "+addr, "http://"+addr+"/"+azuriteAccount+"?comp=list", answered, time.Minute); err != nil {
		return nil, err
	}
	return a, nil
}

// ConnectionString is the emulator account's connection string, naming
// the server's blob endpoint.
func (a *Azurite) ConnectionString() string {
	return fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=http://%s/%s;", azuriteAccount, azuriteKey, a.Addr, azuriteAccount)
}

// Env is the environment a client of the server needs:
// AZURE_STORAGE_CONNECTION_STRING.
func (a *Azurite) Env() []string {
	return []string{"AZURE_STORAGE_CONNECTION_STRING=" + a.ConnectionString()}
}

// URL is the location of PREFIX in container, for -repo:
// azure:CONTAINER:/PREFIX.
func (a *Azurite) URL(containerName, prefix string) string {
	return "azure:" + containerName + ":/" + prefix
}

// MakeContainer makes the container name.
func (a *Azurite) MakeContainer(t testing.TB, name string) {
	t.Helper()
	c, err := container.NewClientFromConnectionString(a.ConnectionString(), name, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(context.Background(), nil); err != nil {
		t.Fatalf("create container %s: %v", name, err)
	}
}
