package s3store_test

import (
	"context"
	"errors"
	"fmt"
	"go/build"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/diskpoint/diskpoint/chain/internal/objstoretest"
	"github.com/diskpoint/diskpoint/chain/s3store"
)

// The tests run against a real MinIO that they start on 127.0.0.1, once
// for the package, with its data in a temporary directory.
const (
	minioUser     = "diskpoint-test"
	minioPassword = "diskpoint-test-secret"
)

// minioServer is the running server, started by the first test that needs
// it and stopped by TestMain.
type minioServer struct {
	endpoint string // host:port of the S3 API
	console  string
	bin      string
	dir      string
	cmd      *exec.Cmd
	exited   chan struct{} // closed when cmd has exited
}

var (
	serverOnce sync.Once
	server     *minioServer
	serverErr  error
	// skipReason is set when there is no MinIO binary: the tests skip
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

// findMinIO returns the minio binary: $DISKPOINT_MINIO, minio on PATH, or
// where `go install` puts it.
func findMinIO() (string, error) {
	if p := os.Getenv("DISKPOINT_MINIO"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p, nil
	}
	gopath := build.Default.GOPATH
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		if p := filepath.Join(gobin, "minio"); isFile(p) {
			return p, nil
		}
	}
	for _, dir := range filepath.SplitList(gopath) {
		if p := filepath.Join(dir, "bin", "minio"); isFile(p) {
			return p, nil
		}
	}
	return "", errors.New("no minio binary (set DISKPOINT_MINIO, put it on PATH, or go install github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c)")
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

func startMinIO() (*minioServer, error) {
	bin, err := findMinIO()
	if err != nil {
		skipReason = err.Error()
		return nil, err
	}
	dir, err := os.MkdirTemp("", "diskpoint-minio-")
	if err != nil {
		return nil, err
	}
	port, err := objstoretest.FreePort()
	if err != nil {
		return nil, err
	}
	console, err := objstoretest.FreePort()
	if err != nil {
		return nil, err
	}
	s := &minioServer{
		endpoint: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		console:  net.JoinHostPort("127.0.0.1", strconv.Itoa(console)),
		bin:      bin,
		dir:      dir,
	}
	if err := s.launch(); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// launch starts the server process on the server's address and data
// directory (again, after a kill) and waits until it is ready.
func (s *minioServer) launch() error {
	s.exited = make(chan struct{})
	s.cmd = exec.Command(s.bin, "server", filepath.Join(s.dir, "data"),
		"--address", s.endpoint, "--console-address", s.console, "--quiet")
	s.cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+minioUser, "MINIO_ROOT_PASSWORD="+minioPassword,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off")
	logFile, err := os.OpenFile(filepath.Join(s.dir, "minio.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		close(s.exited)
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	exited := s.exited
	go func() { s.cmd.Wait(); logFile.Close(); close(exited) }()
	if err := s.waitReady(2 * time.Minute); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "minio.log"))
		return fmt.Errorf("%w; its log:\n%s", err, log)
	}
	return nil
}

// kill ends the server process at once (SIGKILL), as a crash would.
func (s *minioServer) kill() {
	s.cmd.Process.Kill()
	<-s.exited
}

// waitReady polls MinIO's liveness endpoint until it answers 200.
func (s *minioServer) waitReady(limit time.Duration) error {
	ready := func(resp *http.Response) bool { return resp.StatusCode == http.StatusOK }
	return objstoretest.WaitReady("minio", "minio on "+s.endpoint, "http://"+s.endpoint+"/minio/health/ready", ready, s.cmd, s.exited, limit)
}

func (s *minioServer) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		<-s.exited
	}
	os.RemoveAll(s.dir)
}

// needMinIO returns the running server, starting it first if needed. It
// skips the test when there is no binary, unless CI=true.
func needMinIO(t *testing.T) *minioServer {
	t.Helper()
	serverOnce.Do(func() { server, serverErr = startMinIO() })
	objstoretest.NeedServer(t, "MinIO", serverErr, skipReason)
	return server
}

var bucketSeq atomic.Int64

// newBucket makes a new, empty bucket on the server and returns its name.
func newBucket(t *testing.T, srv *minioServer) string {
	t.Helper()
	client, err := minio.New(srv.endpoint, &minio.Options{Creds: credentials.NewStaticV4(minioUser, minioPassword, "")})
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("test-%d-%d", os.Getpid(), bucketSeq.Add(1))
	if err := client.MakeBucket(context.Background(), name, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make bucket %s: %v", name, err)
	}
	return name
}

// storeOptions are the options of a store in bucket under prefix on srv.
func storeOptions(srv *minioServer, bucket, prefix string) s3store.Options {
	return s3store.Options{
		Endpoint:        srv.endpoint,
		Bucket:          bucket,
		Prefix:          prefix,
		AccessKeyID:     minioUser,
		SecretAccessKey: minioPassword,
		Insecure:        true,
	}
}

// newStore returns a store in a new bucket, closed at the test's end.
func newStore(t *testing.T, mutate func(*s3store.Options)) *s3store.Store {
	t.Helper()
	srv := needMinIO(t)
	opts := storeOptions(srv, newBucket(t, srv), "repo/one")
	if mutate != nil {
		mutate(&opts)
	}
	s, err := s3store.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
