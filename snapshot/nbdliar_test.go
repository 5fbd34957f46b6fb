package snapshot_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/internal/nbdfake"
	"github.com/diskpoint/diskpoint/snapshot"
)

// A create from an NBD server that lies fails with an error naming the
// server, and no restore point appears.
func TestCreateFromLyingNBDServerStoresNothing(t *testing.T) {
	const size = 4 << 20
	honestStatus := func(c *nbdfake.Conn, r nbdfake.Request) bool {
		if r.Type != 7 {
			return false
		}
		c.Send(nbdfake.StatusChunk(r.Handle, 1, r.Length, 0))
		return true
	}
	for _, lie := range []struct {
		name   string
		answer func(c *nbdfake.Conn, r nbdfake.Request)
		want   string
	}{
		{"block status past the end", func(c *nbdfake.Conn, r nbdfake.Request) {
			c.Send(nbdfake.StatusChunk(r.Handle, 1, r.Length, 0, 2*size, 0))
		}, "past the end"},
		{"a reply to an unknown handle", func(c *nbdfake.Conn, r nbdfake.Request) {
			if !honestStatus(c, r) {
				c.Send(nbdfake.DataChunk(1, r.Handle+100, r.Offset, make([]byte, r.Length)))
			}
		}, "not in flight"},
		{"a short read", func(c *nbdfake.Conn, r nbdfake.Request) {
			if !honestStatus(c, r) {
				c.Send(nbdfake.ChunkClaiming(1, 1, r.Handle, r.Length+8, make([]byte, 8+r.Length/2)))
				c.Close()
			}
		}, "short read"},
	} {
		t.Run(lie.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			uri := (&nbdfake.Server{Size: size, Answer: lie.answer}).Start(t)
			socket := uri[strings.Index(uri, "socket=")+len("socket="):]
			repo, _ := newRepo(t)
			vm, _ := repo.Collection("vm")
			_, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "os", NBD: uri}}})
			if err == nil || !strings.Contains(err.Error(), socket) || !strings.Contains(err.Error(), lie.want) {
				t.Errorf("create: %v; want an error naming the server %s and saying %q", err, socket, lie.want)
			}
			if points, err := vm.List(ctx); err != nil || len(points) != 0 {
				t.Errorf("after the failed create: %d restore points, %v", len(points), err)
			}
		})
	}
}
