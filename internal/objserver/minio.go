package objserver

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// MinIOVersion is the minio module version .ci/run installs, for the hint
// of a missing program.
const MinIOVersion = "github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c"

// MinIO is a MinIO server on 127.0.0.1 at a free port, with its data in a
// new directory and root credentials made up for it.
type MinIO struct {
	// Endpoint is its S3 API's host:port.
	Endpoint string
	// AccessKey and SecretKey are its root credentials.
	AccessKey, SecretKey string
	dir                  string
	proc                 *process
}

// FindMinIO returns the minio program: the one DISKPOINT_MINIO names (as
// .ci/run exports it), minio on PATH, or where `go install` puts it.
// getenv reads the environment (nil: os.Getenv). Without one the error
// wraps ErrNoProgram and says how to get one.
func FindMinIO(getenv func(string) string) (string, error) {
	getenv = orGetenv(getenv)
	return findProgram(getenv, "DISKPOINT_MINIO", "minio", goBinPaths(getenv, "minio"),
		"set DISKPOINT_MINIO, put minio on PATH, or go install "+MinIOVersion)
}

// StartMinIO starts a MinIO for the test t, with its data under t's
// temporary directory, and stops it when t ends. It skips t when there is
// no minio program, unless CI=true.
func StartMinIO(t testing.TB) *MinIO {
	t.Helper()
	bin, err := FindMinIO(nil)
	var m *MinIO
	if err == nil {
		m, err = LaunchMinIO(context.Background(), bin, t.TempDir())
	}
	Need(t, "MinIO", err)
	t.Cleanup(m.Stop)
	return m
}

// LaunchMinIO starts the minio program bin with its data and log in a new
// directory under parent ("" means the system's temporary directory), and
// waits until it serves. Stop ends it and removes that directory.
func LaunchMinIO(ctx context.Context, bin, parent string) (*MinIO, error) {
	dir, err := os.MkdirTemp(parent, "diskpoint-minio-")
	if err != nil {
		return nil, err
	}
	m := &MinIO{dir: dir, AccessKey: "diskpoint", SecretKey: rand.Text()}
	if err := m.launch(ctx, bin); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return m, nil
}

func (m *MinIO) launch(ctx context.Context, bin string) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	console, err := freeAddr()
	if err != nil {
		return err
	}
	m.Endpoint = addr
	m.proc, err = start(bin, []string{"server", m.DataDir(), "--address", addr, "--console-address", console, "--quiet"},
		[]string{"MINIO_ROOT_USER=" + m.AccessKey, "MINIO_ROOT_PASSWORD=" + m.SecretKey, "MINIO_BROWSER=off", "MINIO_UPDATE=off"},
		filepath.Join(m.dir, "minio.log"))
	if err != nil {
		return err
	}
	if err := m.waitReady(ctx); err != nil {
		m.proc.kill()
		return err
	}
	return nil
}

// waitReady polls MinIO's readiness endpoint until it answers 200.
func (m *MinIO) waitReady(ctx context.Context) error {
	ready := func(resp *http.Response) bool { return resp.StatusCode == http.StatusOK }
	return m.proc.waitReady(ctx, "minio on "+m.Endpoint, "http://"+m.Endpoint+"/minio/health/ready", ready, 2*time.Minute)
}

// Kill ends the server at once (SIGKILL), as a crash would, and keeps its
// data for Restart.
func (m *MinIO) Kill() { m.proc.kill() }

// Restart starts the server again, after Kill, on the same address and
// data, and waits until it serves.
func (m *MinIO) Restart(ctx context.Context) error {
	m.proc.kill()
	if err := m.proc.run(); err != nil {
		return err
	}
	return m.waitReady(ctx)
}

// Stop ends the server and removes its data.
func (m *MinIO) Stop() {
	m.proc.kill()
	os.RemoveAll(m.dir)
}

// DataDir is the directory that holds the server's objects.
func (m *MinIO) DataDir() string { return filepath.Join(m.dir, "data") }

// Env is the environment a client process of the server needs: its
// credentials in the AWS variables.
func (m *MinIO) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + m.AccessKey, "AWS_SECRET_ACCESS_KEY=" + m.SecretKey}
}

// Getenv is the environment a client of the server needs, as a function:
// its credentials over the process's own environment (for
// location.Location.NewStore).
func (m *MinIO) Getenv(name string) string {
	switch name {
	case "AWS_ACCESS_KEY_ID":
		return m.AccessKey
	case "AWS_SECRET_ACCESS_KEY":
		return m.SecretKey
	case "AWS_SESSION_TOKEN":
		return ""
	}
	return os.Getenv(name)
}

// URL is the location of PREFIX in bucket, for -repo:
// s3:http://ENDPOINT/BUCKET/PREFIX.
func (m *MinIO) URL(bucket, prefix string) string {
	return fmt.Sprintf("s3:http://%s/%s/%s", m.Endpoint, bucket, prefix)
}

// NewClient returns a minio-go client of the server with its root
// credentials.
func (m *MinIO) NewClient() (*minio.Client, error) {
	return minio.New(m.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(m.AccessKey, m.SecretKey, "")})
}

// Client is NewClient for a test: it fails t on an error.
func (m *MinIO) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := m.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// MakeBucket makes the bucket name, or fails t.
func (m *MinIO) MakeBucket(t testing.TB, name string) {
	t.Helper()
	if err := m.CreateBucket(context.Background(), name); err != nil {
		t.Fatal(err)
	}
}

// CreateBucket makes the bucket name.
func (m *MinIO) CreateBucket(ctx context.Context, name string) error {
	c, err := m.NewClient()
	if err == nil {
		err = c.MakeBucket(ctx, name, minio.MakeBucketOptions{})
	}
	if err != nil {
		return fmt.Errorf("make bucket %s: %w", name, err)
	}
	return nil
}
