package main

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

// minioServer is a MinIO the example started for itself: on 127.0.0.1 at a
// free port, with its data in a temporary directory, and root credentials
// made up for the run.
type minioServer struct {
	endpoint             string // host:port of its S3 API
	accessKey, secretKey string
	dir                  string
	cmd                  *exec.Cmd
	exited               chan struct{}
}

// errNoMinIO: there is no minio program to start.
var errNoMinIO = errors.New("no minio program")

// findMinIO returns the minio program: the one DISKPOINT_MINIO names (as
// .ci/run exports it), or minio on PATH.
func findMinIO(getenv func(string) string) (string, error) {
	if p := getenv("DISKPOINT_MINIO"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p, nil
	}
	return "", errNoMinIO
}

// startMinIO starts bin and waits until it serves, then makes bucket.
func startMinIO(ctx context.Context, bin, bucket string) (*minioServer, error) {
	dir, err := os.MkdirTemp("", "diskpoint-tiered-minio-")
	if err != nil {
		return nil, err
	}
	s := &minioServer{dir: dir, accessKey: "diskpoint-tiered", secretKey: randomSecret(), exited: make(chan struct{})}
	api, err := freeAddr()
	if err != nil {
		s.stop()
		return nil, err
	}
	console, err := freeAddr()
	if err != nil {
		s.stop()
		return nil, err
	}
	s.endpoint = api
	log, err := os.Create(filepath.Join(dir, "minio.log"))
	if err != nil {
		s.stop()
		return nil, err
	}
	s.cmd = exec.Command(bin, "server", filepath.Join(dir, "data"), "--address", api, "--console-address", console, "--quiet")
	s.cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+s.accessKey, "MINIO_ROOT_PASSWORD="+s.secretKey, "MINIO_BROWSER=off", "MINIO_UPDATE=off")
	s.cmd.Stdout, s.cmd.Stderr = log, log
	if err := s.cmd.Start(); err != nil {
		log.Close()
		s.cmd = nil
		s.stop()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { s.cmd.Wait(); log.Close(); close(s.exited) }()
	if err := s.waitReady(ctx, 2*time.Minute); err != nil {
		logged, _ := os.ReadFile(filepath.Join(dir, "minio.log"))
		s.stop()
		return nil, fmt.Errorf("%w; its log:\n%s", err, logged)
	}
	client, err := minio.New(s.endpoint, &minio.Options{Creds: credentials.NewStaticV4(s.accessKey, s.secretKey, "")})
	if err == nil {
		err = client.MakeBucket(ctx, bucket, minio.MakeBucketOptions{})
	}
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("make bucket %s: %w", bucket, err)
	}
	return s, nil
}

// waitReady polls MinIO's readiness endpoint until it answers 200.
func (s *minioServer) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := client.Get("http://" + s.endpoint + "/minio/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("minio on %s not ready after %v (last: %v)", s.endpoint, limit, err)
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

// getenv is the environment a client of the server needs: its
// credentials, over the process's own environment.
func (s *minioServer) getenv(name string) string {
	switch name {
	case "AWS_ACCESS_KEY_ID":
		return s.accessKey
	case "AWS_SECRET_ACCESS_KEY":
		return s.secretKey
	case "AWS_SESSION_TOKEN":
		return ""
	}
	return os.Getenv(name)
}

// stop ends the server and removes its data.
func (s *minioServer) stop() {
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

func randomSecret() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}
