package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/internal/objserver"
)

// The example runs to its end against a MinIO that DISKPOINT_VAULT names
// (.ci/run's `go run ./examples/tiered` covers the MinIO it starts itself):
// the pruned points come from the vault, the local ones from the local
// tier with no read of the vault, all bit-exact (run checks each and fails
// otherwise).
func TestTieredExampleRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: the example takes restore points of 32 MiB of disks and transfers them")
	}
	m := objserver.StartMinIO(t)
	m.MakeBucket(t, "vaults")
	env := map[string]string{"DISKPOINT_VAULT": m.URL("vaults", "demo")}
	for _, kv := range m.Env() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	getenv := func(name string) string {
		if v, ok := env[name]; ok {
			return v
		}
		return os.Getenv(name)
	}
	var out bytes.Buffer
	if err := run(context.Background(), &out, getenv); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"VM web-vm, disks os (24 MiB) and data (8.0 MiB); the local tier keeps its newest 2 restore points", "from the vault tier", "from the local tier", "0 reads of the vault", "the local tier holds 2 restore points, the vault 5", "all intact"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the example's output lacks %q:\n%s", want, out.String())
		}
	}
}

// Without a vault and without a minio program, the example says what to set.
func TestTieredExampleNamesWhatItNeeds(t *testing.T) {
	getenv := func(string) string { return "" }
	t.Setenv("PATH", t.TempDir()) // no minio on it
	err := run(context.Background(), new(bytes.Buffer), getenv)
	if err == nil || !strings.Contains(err.Error(), "DISKPOINT_VAULT") || !strings.Contains(err.Error(), "DISKPOINT_MINIO") {
		t.Fatalf("with no vault and no minio: %v", err)
	}
}
