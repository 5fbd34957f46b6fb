package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
)

// servingNBD is serve-nbd running in this process on a Unix socket.
type servingNBD struct {
	url    string // the export's NBD URL, as serve-nbd printed it
	line   string // what serve-nbd printed first
	cancel context.CancelFunc
	done   chan int
	stderr bytes.Buffer
}

// startServeNBD runs serve-nbd with args (and a -listen on a new Unix
// socket) until stop, and returns once it serves.
func startServeNBD(t *testing.T, args ...string) *servingNBD {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	ctx, cancel := context.WithCancel(context.Background())
	s := &servingNBD{cancel: cancel, done: make(chan int, 1)}
	stdout, w := io.Pipe()
	go func() {
		s.done <- run(ctx, &env{stdout: w, stderr: &s.stderr}, append(append([]string{"serve-nbd"}, args...), "-listen", "unix:"+sock))
		w.Close()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		cancel()
		<-s.done
		t.Fatalf("serve-nbd said nothing: %v %s", err, s.stderr.String())
	}
	go io.Copy(io.Discard, stdout)
	s.line = line
	s.url = strings.TrimSpace(line[strings.LastIndex(line, " ")+1:])
	t.Cleanup(s.stopOnce)
	return s
}

// stop ends the server and returns its exit status and stderr.
func (s *servingNBD) stop() (int, string) {
	s.cancel()
	code := <-s.done
	s.done <- code // for stopOnce at cleanup
	return code, s.stderr.String()
}

func (s *servingNBD) stopOnce() {
	s.cancel()
	code := <-s.done
	s.done <- code
}
