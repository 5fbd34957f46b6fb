package objserver

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
)

// A MinIO serves S3 with its credentials, keeps its objects across Kill
// and Restart, and Stop removes its data.
func TestMinIORestartsOnItsDataAndStopRemovesIt(t *testing.T) {
	bin, err := FindMinIO(nil)
	Need(t, "MinIO", err)
	ctx := context.Background()
	m, err := LaunchMinIO(ctx, bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m.MakeBucket(t, "made")
	client := m.Client(t)
	if _, err := client.PutObject(ctx, "made", "kept", strings.NewReader("before the crash"), -1, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	m.Kill()
	if _, err := client.BucketExists(ctx, "made"); err == nil {
		t.Fatal("a killed MinIO answered")
	}
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	obj, err := client.GetObject(ctx, "made", "kept", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(obj)
	if err != nil || string(got) != "before the crash" {
		t.Fatalf("after Restart, the object holds %q (%v)", got, err)
	}
	data := m.DataDir()
	m.Stop()
	if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after Stop, its data: %v", err)
	}
}

// An Azurite serves blobs with the emulator's account.
func TestAzuriteServesAContainer(t *testing.T) {
	a := StartAzurite(t)
	a.MakeContainer(t, "made")
	if err := a.CreateContainer(context.Background(), "made"); err == nil || !strings.Contains(err.Error(), "made") {
		t.Fatalf("making the container again: %v, want an error naming it", err)
	}
}

// Without the variable, on PATH or in a Go bin directory, there is no
// program, and the error says how to get one.
func TestFindWithoutAProgram(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	home := t.TempDir()
	getenv := func(name string) string {
		if name == "HOME" {
			return home
		}
		return ""
	}
	if _, err := FindMinIO(getenv); !errors.Is(err, ErrNoProgram) || !strings.Contains(err.Error(), "go install "+MinIOVersion) {
		t.Fatalf("FindMinIO with nothing installed: %v", err)
	}
	// go install's place under $HOME/go/bin is found.
	bin := filepath.Join(home, "go", "bin", "minio")
	os.MkdirAll(filepath.Dir(bin), 0o755)
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := FindMinIO(getenv); err != nil || got != bin {
		t.Fatalf("FindMinIO with minio in $HOME/go/bin: %q, %v", got, err)
	}
}
