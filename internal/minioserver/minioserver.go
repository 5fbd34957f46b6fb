package minioserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Server is a MinIO started by Start: on 127.0.0.1 at a free port, with
// its data in a new temporary directory, and root credentials made up for
// the run.
type Server struct {
	// Endpoint is the host:port of its S3 API.
	Endpoint string
	// AccessKey and SecretKey are its root credentials.
	AccessKey, SecretKey string
	dir                  string
	cmd                  *exec.Cmd
	exited               chan struct{}
}

// ErrNoMinIO: there is no minio program to start.
var ErrNoMinIO = errors.New("no minio program (set DISKPOINT_MINIO, put minio on PATH, or go install github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c)")

// Find returns the minio program: the one DISKPOINT_MINIO names (as
// .ci/run exports it), or minio on PATH; getenv reads the environment
// (nil: os.Getenv).
func Find(getenv func(string) string) (string, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if p := getenv("DISKPOINT_MINIO"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p, nil
	}
	return "", ErrNoMinIO
}

// Start starts the minio program bin with its data in a new directory
// under parent ("" means the system's temporary directory), waits until
// it serves, and makes bucket. Stop ends it and removes its data.
func Start(ctx context.Context, bin, parent, bucket string) (*Server, error) {
	dir, err := os.MkdirTemp(parent, "diskpoint-minio-")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, AccessKey: "diskpoint", SecretKey: randomSecret(), exited: make(chan struct{})}
	api, err := freeAddr()
	if err != nil {
		s.Stop()
		return nil, err
	}
	console, err := freeAddr()
	if err != nil {
		s.Stop()
		return nil, err
	}
	s.Endpoint = api
	log, err := os.Create(filepath.Join(dir, "minio.log"))
	if err != nil {
		s.Stop()
		return nil, err
	}
	s.cmd = exec.Command(bin, "server", filepath.Join(dir, "data"), "--address", api, "--console-address", console, "--quiet")
	s.cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+s.AccessKey, "MINIO_ROOT_PASSWORD="+s.SecretKey, "MINIO_BROWSER=off", "MINIO_UPDATE=off")
	s.cmd.Stdout, s.cmd.Stderr = log, log
	if err := s.cmd.Start(); err != nil {
		log.Close()
		s.cmd = nil
		s.Stop()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { s.cmd.Wait(); log.Close(); close(s.exited) }()
	if err := s.waitReady(ctx, 2*time.Minute); err != nil {
		logged, _ := os.ReadFile(filepath.Join(dir, "minio.log"))
		s.Stop()
		return nil, fmt.Errorf("%w; its log:\n%s", err, logged)
	}
	client, err := minio.New(s.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, "")})
	if err == nil {
		err = client.MakeBucket(ctx, bucket, minio.MakeBucketOptions{})
	}
	if err != nil {
		s.Stop()
		return nil, fmt.Errorf("make bucket %s: %w", bucket, err)
	}
	return s, nil
}

// waitReady polls MinIO's readiness endpoint until it answers 200.
func (s *Server) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := client.Get("http://" + s.Endpoint + "/minio/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("minio on %s not ready after %v (last: %v)", s.Endpoint, limit, err)
		}
		select {
		case <-s.exited:
			return fmt.Errorf("minio exited before it was ready: %v", s.cmd.ProcessState)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Getenv is the environment a client of the server needs: its
// credentials, over the process's own environment (for
// location.Location.NewStore).
func (s *Server) Getenv(name string) string {
	switch name {
	case "AWS_ACCESS_KEY_ID":
		return s.AccessKey
	case "AWS_SECRET_ACCESS_KEY":
		return s.SecretKey
	case "AWS_SESSION_TOKEN":
		return ""
	}
	return os.Getenv(name)
}

// Env is the same credentials as NAME=VALUE lines, for a child process.
func (s *Server) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + s.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s.SecretKey}
}

// DataDir is the directory that holds the server's objects.
func (s *Server) DataDir() string { return filepath.Join(s.dir, "data") }

// Stop ends the server and removes its data.
func (s *Server) Stop() {
	if s.cmd != nil {
		s.cmd.Process.Kill()
		<-s.exited
	}
	os.RemoveAll(s.dir)
}

// freeAddr returns 127.0.0.1:PORT with a port nothing listens on now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// randomSecret is 32 random hex digits.
func randomSecret() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}
