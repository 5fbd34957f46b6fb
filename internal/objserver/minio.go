package objserver

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// MinIO is a MinIO server running for one test.
type MinIO struct {
	// Endpoint is its S3 API's host:port on 127.0.0.1.
	Endpoint string
	// AccessKey and SecretKey are its root credentials.
	AccessKey, SecretKey string
	proc                 *process
}

// StartMinIO starts a MinIO with its data in a new temporary directory of
// t, and stops it when t ends. It skips t when there is no minio program,
// unless CI=true.
func StartMinIO(t testing.TB) *MinIO {
	t.Helper()
	m, err := startMinIO(t)
	need(t, "MinIO", err)
	return m
}

func startMinIO(t testing.TB) (*MinIO, error) {
	bin, err := findProgram("DISKPOINT_MINIO", "minio", goBinDirs("minio"),
		"set DISKPOINT_MINIO, put it on PATH, or go install github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c")
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	console, err := freeAddr()
	if err != nil {
		return nil, err
	}
	dir := t.TempDir()
	m := &MinIO{Endpoint: addr, AccessKey: "diskpoint-test", SecretKey: "diskpoint-test-secret"}
	m.proc, err = start(t, bin, []string{"server", filepath.Join(dir, "data"), "--address", addr, "--console-address", console, "--quiet"},
		[]string{"MINIO_ROOT_USER=" + m.AccessKey, "MINIO_ROOT_PASSWORD=" + m.SecretKey, "MINIO_BROWSER=off", "MINIO_UPDATE=off"},
		filepath.Join(dir, "minio.log"))
	if err != nil {
		return nil, err
	}
	ready := func(resp *http.Response) bool { return resp.StatusCode == http.StatusOK }
	if err := m.proc.waitReady("minio on "+addr, "http://"+addr+"/minio/health/ready", ready, 2*time.Minute); err != nil {
		return nil, err
	}
	return m, nil
}

// Env is the environment a client of the server needs: its credentials in
// the AWS variables.
func (m *MinIO) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + m.AccessKey, "AWS_SECRET_ACCESS_KEY=" + m.SecretKey}
}

// URL is the location of PREFIX in bucket, for -repo:
// s3:http://ENDPOINT/BUCKET/PREFIX.
func (m *MinIO) URL(bucket, prefix string) string {
	return fmt.Sprintf("s3:http://%s/%s/%s", m.Endpoint, bucket, prefix)
}

// Client returns a minio-go client of the server with its root credentials.
func (m *MinIO) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(m.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(m.AccessKey, m.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// MakeBucket makes the bucket name.
func (m *MinIO) MakeBucket(t testing.TB, name string) {
	t.Helper()
	if err := m.Client(t).MakeBucket(context.Background(), name, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make bucket %s: %v", name, err)
	}
}
