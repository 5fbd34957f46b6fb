package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeQMP serves one connection on a Unix socket: the greeting, then
// answer(command, id) for each command, line by line.
func fakeQMP(t *testing.T, answer func(cmd string, id uint64) string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		conn.Write([]byte(`{"QMP": {"version": {}, "capabilities": []}}` + "\n"))
		in := bufio.NewScanner(conn)
		for in.Scan() {
			var c struct {
				Execute string
				ID      uint64
			}
			if json.Unmarshal(in.Bytes(), &c) != nil {
				return
			}
			if _, err := conn.Write([]byte(answer(c.Execute, c.ID) + "\n")); err != nil {
				return
			}
		}
	}()
	return sock
}

func TestQMPClientMatchesRepliesAndSkipsEvents(t *testing.T) {
	sock := fakeQMP(t, func(cmd string, id uint64) string {
		event := `{"event": "JOB_STATUS_CHANGE", "data": {}, "timestamp": {}}` + "\n"
		switch cmd {
		case "query-version":
			return event + `{"return": {"qemu": {"major": 7}}, "id": ` + jsonID(id) + `}`
		case "fail":
			return `{"error": {"class": "GenericError", "desc": "no such thing"}, "id": ` + jsonID(id) + `}`
		}
		return `{"return": {}, "id": ` + jsonID(id) + `}`
	})
	ctx := context.Background()
	c, err := Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var v struct{ Qemu struct{ Major int } }
	if err := c.Execute(ctx, "query-version", nil, &v); err != nil || v.Qemu.Major != 7 {
		t.Fatalf("query-version: %+v, %v", v, err)
	}
	var qe *QMPError
	if err := c.Execute(ctx, "fail", nil, nil); !errors.As(err, &qe) || qe.Desc != "no such thing" {
		t.Fatalf("an error reply gave %v", err)
	}
}

func TestQMPClientRefusesHostileReplies(t *testing.T) {
	for name, reply := range map[string]string{
		"unknown id":   `{"return": {}, "id": 999}`,
		"no id":        `{"return": {}}`,
		"huge line":    `{"return": "` + strings.Repeat("x", maxQMPLine+1) + `", "id": 2}`,
		"not json":     `{"return": `,
		"two greeting": `{"QMP": {"version": {}, "capabilities": []}}`,
	} {
		t.Run(name, func(t *testing.T) {
			sock := fakeQMP(t, func(cmd string, id uint64) string {
				if cmd == "qmp_capabilities" {
					return `{"return": {}, "id": ` + jsonID(id) + `}`
				}
				return reply
			})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := Dial(ctx, sock)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			err = c.Execute(ctx, "query-version", nil, nil)
			if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), sock) {
				t.Fatalf("a hostile reply gave %v (want an error naming %s, before the timeout)", err, sock)
			}
		})
	}
}

func jsonID(id uint64) string {
	b, _ := json.Marshal(id)
	return string(b)
}
