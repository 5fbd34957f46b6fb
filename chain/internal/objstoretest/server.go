package objstoretest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"
)

// FreePort returns a port on 127.0.0.1 that nothing listens on now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// WaitReady polls url until the server answers in a way ready accepts, or
// its process cmd exits (exited is closed), or limit passes. name says
// which server, and where, in errors ("minio", "minio on host:port").
func WaitReady(name, where, url string, ready func(*http.Response) bool, cmd *exec.Cmd, exited <-chan struct{}, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if ready(resp) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v (last: %v)", where, limit, err)
		}
		select {
		case <-exited:
			return fmt.Errorf("%s exited before it was ready: %v", name, cmd.ProcessState)
		case <-tick.C:
		}
	}
}

// NeedServer applies the rule for a test server that failed to start
// (startErr): when skipReason says there is no server program, the test
// skips, unless CI=true, where a missing server is a failure; any other
// failure to start fails the test. name names the server in the failure.
func NeedServer(t *testing.T, name string, startErr error, skipReason string) {
	t.Helper()
	if startErr != nil {
		if skipReason != "" && os.Getenv("CI") != "true" {
			t.Skip("skipped: " + skipReason)
		}
		t.Fatalf("%s: %v", name, startErr)
	}
}
