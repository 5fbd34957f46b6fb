package objserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// process is a server program started by start; it can be killed and
// started again with the same arguments, as a crashed server restarts.
type process struct {
	bin       string
	args, env []string
	log       string
	cmd       *exec.Cmd
	exited    chan struct{} // closed when cmd has exited
}

// start runs bin with args and env added to the process's environment,
// its output appended to logPath.
func start(bin string, args, env []string, logPath string) (*process, error) {
	p := &process{bin: bin, args: args, env: env, log: logPath}
	return p, p.run()
}

// run starts the program (again).
func (p *process) run() error {
	logFile, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	p.cmd = exec.Command(p.bin, p.args...)
	p.cmd.Env = append(os.Environ(), p.env...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		p.cmd = nil
		return fmt.Errorf("start %s: %w", p.bin, err)
	}
	exited := make(chan struct{})
	p.exited = exited
	cmd := p.cmd
	go func() { cmd.Wait(); logFile.Close(); close(exited) }()
	return nil
}

// kill ends the program at once (SIGKILL), as a crash would, and waits for
// it; a program that has already exited is left as it is.
func (p *process) kill() {
	if p.cmd == nil {
		return
	}
	select {
	case <-p.exited:
	default:
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// waitReady polls url until ready accepts the answer, the process exits,
// ctx ends, or limit passes; the error carries the server's log.
func (p *process) waitReady(ctx context.Context, name, url string, ready func(*http.Response) bool, limit time.Duration) error {
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
			return p.failure(fmt.Errorf("%s not ready after %v (last: %v)", name, limit, err))
		}
		select {
		case <-p.exited:
			return p.failure(fmt.Errorf("%s exited before it was ready: %v", name, p.cmd.ProcessState))
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func (p *process) failure(err error) error {
	log, _ := os.ReadFile(p.log)
	return fmt.Errorf("%w; its log:\n%s", err, log)
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

// ErrNoProgram marks a server program that is not installed: tests skip
// on it (except under CI=true), programs tell the user how to get one.
var ErrNoProgram = errors.New("not installed")

// Need fails or skips the test for a server that did not start (err):
// a missing program (ErrNoProgram) skips it, except under CI=true, where
// it is a failure like any other.
func Need(t testing.TB, name string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if errors.Is(err, ErrNoProgram) && os.Getenv("CI") != "true" {
		t.Skip("skipped: " + err.Error())
	}
	t.Fatalf("%s: %v", name, err)
}

// findProgram returns the program: the one getenv(envVar) names, name on
// PATH, one of the fixed places, or an error wrapping ErrNoProgram with
// hint. getenv nil means os.Getenv.
func findProgram(getenv func(string) string, envVar, name string, places []string, hint string) (string, error) {
	if p := getenv(envVar); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, p := range places {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("no %s program: %w (%s)", name, ErrNoProgram, hint)
}

// goBinPaths are where `go install` puts the program name: $GOBIN, or the
// bin directory of each $GOPATH entry ($HOME/go by default).
func goBinPaths(getenv func(string) string, name string) []string {
	if gobin := getenv("GOBIN"); gobin != "" {
		return []string{filepath.Join(gobin, name)}
	}
	gopath := getenv("GOPATH")
	if gopath == "" {
		if home := getenv("HOME"); home != "" {
			gopath = filepath.Join(home, "go")
		}
	}
	var paths []string
	for _, dir := range filepath.SplitList(gopath) {
		paths = append(paths, filepath.Join(dir, "bin", name))
	}
	return paths
}

// orGetenv is getenv, or os.Getenv when it is nil.
func orGetenv(getenv func(string) string) func(string) string {
	if getenv == nil {
		return os.Getenv
	}
	return getenv
}
