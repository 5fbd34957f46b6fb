package objserver

import (
	"errors"
	"fmt"
	"go/build"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// process is a server program running for one test.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
	log    string
}

// start runs bin with args, its output to logPath, and stops it (SIGKILL)
// when the test ends.
func start(t testing.TB, bin string, args, env []string, logPath string) (*process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	p := &process{cmd: exec.Command(bin, args...), exited: make(chan struct{}), log: logPath}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { p.cmd.Wait(); logFile.Close(); close(p.exited) }()
	t.Cleanup(p.stop)
	return p, nil
}

func (p *process) stop() {
	p.cmd.Process.Kill()
	<-p.exited
}

// waitReady polls url until ready accepts the answer, the process exits,
// or limit passes; the error carries the server's log.
func (p *process) waitReady(name, url string, ready func(*http.Response) bool, limit time.Duration) error {
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

// errNoProgram marks a server program that is not installed.
var errNoProgram = errors.New("not installed")

// need fails or skips the test for a server that did not start: a missing
// program skips it, except under CI=true.
func need(t testing.TB, name string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if errors.Is(err, errNoProgram) && os.Getenv("CI") != "true" {
		t.Skip("skipped: " + err.Error())
	}
	t.Fatalf("%s: %v", name, err)
}

// findProgram returns the program: $envVar, name on PATH, one of the
// fixed places, or an error wrapping errNoProgram with hint.
func findProgram(envVar, name string, places []string, hint string) (string, error) {
	if p := os.Getenv(envVar); p != "" {
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
	return "", fmt.Errorf("no %s: %w (%s)", name, errNoProgram, hint)
}

// goBinDirs are where go install puts programs.
func goBinDirs(name string) []string {
	var dirs []string
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		dirs = append(dirs, filepath.Join(gobin, name))
	}
	for _, dir := range filepath.SplitList(build.Default.GOPATH) {
		dirs = append(dirs, filepath.Join(dir, "bin", name))
	}
	return dirs
}
