package nbd_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/internal/nbdfake"
	"github.com/diskpoint/diskpoint/nbd"
)

// TestClientRefusesLyingServers: each lie ends the request with an error
// that names the server and says what was wrong; none panics, hangs, or
// returns data that the server did not send.
func TestClientRefusesLyingServers(t *testing.T) {
	const size = 1 << 20
	read := func(c *nbd.Client, ctx context.Context) error { return c.ReadAt(ctx, make([]byte, 8192), 4096) }
	status := func(c *nbd.Client, ctx context.Context) error {
		_, err := c.BlockStatus(ctx, nbd.BaseAllocation, 0, 65536)
		return err
	}
	for _, lie := range []struct {
		name   string
		do     func(*nbd.Client, context.Context) error
		answer func(c *nbdfake.Conn, r nbdfake.Request)
		want   string // in the error
		eof    bool   // a short read: io.ErrUnexpectedEOF, not ErrProtocol
	}{
		{"block status past the end", status, func(c *nbdfake.Conn, r nbdfake.Request) { c.Send(nbdfake.StatusChunk(r.Handle, 1, 2*size, 0)) }, "past the end", false},
		{"block status extent of length 0", status, func(c *nbdfake.Conn, r nbdfake.Request) { c.Send(nbdfake.StatusChunk(r.Handle, 1, 0, 0)) }, "length 0", false},
		{"block status extents past the request, not last", status, func(c *nbdfake.Conn, r nbdfake.Request) {
			c.Send(nbdfake.StatusChunk(r.Handle, 1, 131072, 0, 4096, 3))
		}, "not the last", false},
		{"block status of a context not negotiated", status, func(c *nbdfake.Conn, r nbdfake.Request) { c.Send(nbdfake.StatusChunk(r.Handle, 7, 65536, 0)) }, "not negotiated", false},
		{"block status twice for one context", status, func(c *nbdfake.Conn, r nbdfake.Request) {
			c.Send(nbdfake.Chunk(0, 5, r.Handle, binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 1), 4096), 0)), nbdfake.StatusChunk(r.Handle, 1, 4096, 0))
		}, "twice", false},
		{"block status with no extents", status, func(c *nbdfake.Conn, r nbdfake.Request) { c.Send(nbdfake.Chunk(1, 0, r.Handle, nil)) }, "no extents", false},
		{"block status as a simple reply", status, func(c *nbdfake.Conn, r nbdfake.Request) { c.Send(nbdfake.Simple(r.Handle, 0, nil)) }, "simple reply", false},
		{"reply to an unknown handle", read, func(c *nbdfake.Conn, r nbdfake.Request) {
			c.Send(nbdfake.Simple(r.Handle+1000, 0, make([]byte, r.Length)))
		}, "not in flight", false},
		{"chunk for an unknown handle", read, func(c *nbdfake.Conn, r nbdfake.Request) {
			c.Send(nbdfake.DataChunk(1, r.Handle^0xff, r.Offset, make([]byte, r.Length)))
		}, "not in flight", false},
		{"short simple read", read, func(c *nbdfake.Conn, r nbdfake.Request) {
			c.Send(nbdfake.Simple(r.Handle, 0, make([]byte, r.Length/2)))
			c.Close()
		}, "short read", true},
		{"short data chunk", read, func(c *nbdfake.Conn, r nbdfake.Request) {
			c.Send(nbdfake.ChunkClaiming(1, 1, r.Handle, r.Length+8, append(binary.BigEndian.AppendUint64(nil, r.Offset), make([]byte, 100)...)))
			c.Close()
		}, "short read", true},
		{"a read answered in part", read, func(c *nbdfake.Conn, r nbdfake.Request) {
			c.Send(nbdfake.DataChunk(1, r.Handle, r.Offset, make([]byte, r.Length/2)))
		}, "answered with 4096 bytes", false},
		{"data outside the request", read, func(c *nbdfake.Conn, r nbdfake.Request) {
			c.Send(nbdfake.DataChunk(1, r.Handle, r.Offset+4096, make([]byte, r.Length)))
		}, "outside the read", false},
		{"data before the request", read, func(c *nbdfake.Conn, r nbdfake.Request) {
			c.Send(nbdfake.DataChunk(1, r.Handle, r.Offset-1, make([]byte, 10)))
		}, "outside the read", false},
		{"overlapping chunks", read, func(c *nbdfake.Conn, r nbdfake.Request) {
			c.Send(nbdfake.DataChunk(0, r.Handle, r.Offset, make([]byte, 4096)), nbdfake.DataChunk(1, r.Handle, r.Offset+4095, make([]byte, 4097)))
		}, "overlaps", false},
		{"a hole overlapping data", read, func(c *nbdfake.Conn, r nbdfake.Request) {
			c.Send(nbdfake.DataChunk(0, r.Handle, r.Offset, make([]byte, r.Length)))
			c.Send(nbdfake.Chunk(1, 2, r.Handle, binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, r.Offset), 512)))
		}, "overlaps", false},
		{"block status chunk to a read", read, func(c *nbdfake.Conn, r nbdfake.Request) { c.Send(nbdfake.StatusChunk(r.Handle, 1, r.Length, 0)) }, "chunk type 5 in reply to read", false},
		{"a chunk of 2 GiB", read, func(c *nbdfake.Conn, r nbdfake.Request) {
			c.Send(nbdfake.ChunkClaiming(1, 0x8001, r.Handle, 1<<31, nil))
		}, "of 2147483648 bytes", false},
		{"a data chunk of 4 GiB", read, func(c *nbdfake.Conn, r nbdfake.Request) {
			c.Send(nbdfake.ChunkClaiming(1, 1, r.Handle, 1<<32-1, binary.BigEndian.AppendUint64(nil, r.Offset)))
		}, "outside the read", false},
		{"endless chunks", read, func(c *nbdfake.Conn, r nbdfake.Request) {
			for range 1000 {
				c.Send(nbdfake.Chunk(0, 0x8001, r.Handle, append(binary.BigEndian.AppendUint32(nil, 5), 0, 0)))
			}
		}, "more than", false},
		{"an error chunk with errno 0", read, func(c *nbdfake.Conn, r nbdfake.Request) {
			c.Send(nbdfake.Chunk(1, 0x8001, r.Handle, []byte{0, 0, 0, 0, 0, 0}))
		}, "errno 0", false},
		{"bad reply magic", read, func(c *nbdfake.Conn, r nbdfake.Request) { c.Send(make([]byte, 16)) }, "reply magic", false},
		{"NONE without DONE", read, func(c *nbdfake.Conn, r nbdfake.Request) { c.Send(nbdfake.Chunk(0, 0, r.Handle, nil)) }, "NBD_REPLY_TYPE_NONE", false},
	} {
		t.Run(lie.name, func(t *testing.T) {
			f := &nbdfake.Server{Size: size, Answer: lie.answer}
			uri := f.Start(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, err := nbd.Dial(ctx, uri, nbd.ClientOptions{MetaContexts: []string{nbd.BaseAllocation}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			err = lie.do(c, ctx)
			switch {
			case err == nil:
				t.Fatal("the client believed the lie")
			case !strings.Contains(err.Error(), uri):
				t.Errorf("error %q does not name the server %s", err, uri)
			case !strings.Contains(err.Error(), lie.want):
				t.Errorf("error %q does not say %q", err, lie.want)
			case lie.eof && !errors.Is(err, io.ErrUnexpectedEOF):
				t.Errorf("error %q is not io.ErrUnexpectedEOF", err)
			case !lie.eof && !errors.Is(err, nbd.ErrProtocol):
				t.Errorf("error %q is not ErrProtocol", err)
			}
			// The connection is closed: later requests fail at once.
			if err := read(c, ctx); err == nil {
				t.Error("a read after the lie succeeded")
			}
		})
	}
}

// TestClientRefusesLyingHandshakes: lies in the handshake fail Dial with
// an error that names the server.
func TestClientRefusesLyingHandshakes(t *testing.T) {
	for _, f := range []*nbdfake.Server{
		{Size: 4096, NoInfo: true},
		{Size: 4096, Contexts: []string{"qemu:dirty-bitmap:evil"}},
		{Size: 4096, Contexts: []string{nbd.BaseAllocation, nbd.BaseAllocation}},
		{Size: 1 << 63},
	} {
		uri := f.Start(t)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		c, err := nbd.Dial(ctx, uri, nbd.ClientOptions{MetaContexts: []string{nbd.BaseAllocation}})
		cancel()
		if err == nil {
			c.Close()
			t.Errorf("Dial believed %+v", f)
		} else if !errors.Is(err, nbd.ErrProtocol) || !strings.Contains(err.Error(), uri) {
			t.Errorf("Dial of %+v: %v, want ErrProtocol naming the server", f, err)
		}
	}
}

// TestClientRequestsInFlight: a server that answers nothing until it has
// 8 requests, and then answers them in reverse order, with chunks out of
// order, serves a client that sends them at once and matches replies by
// handle. Block status that the server gives in small steps is asked for
// again until it covers the range.
func TestClientRequestsInFlight(t *testing.T) {
	disk := testDisk(1 << 20)
	var held []nbdfake.Request
	f := &nbdfake.Server{Size: uint64(len(disk)), Answer: func(c *nbdfake.Conn, r nbdfake.Request) {
		if r.Type == 7 { // 4 KiB at a time, alternating
			c.Send(nbdfake.StatusChunk(r.Handle, 1, 4096, uint32(r.Offset/4096%2)))
			return
		}
		held = append(held, r)
		if len(held) < 8 {
			return
		}
		for i := len(held) - 1; i >= 0; i-- {
			r := held[i]
			half := uint64(r.Length / 2)
			c.Send(nbdfake.DataChunk(0, r.Handle, r.Offset+half, disk[r.Offset+half:r.Offset+uint64(r.Length)]),
				nbdfake.Chunk(0, 2, r.Handle, binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, r.Offset), 512)),
				nbdfake.DataChunk(0, r.Handle, r.Offset+512, disk[r.Offset+512:r.Offset+half]),
				nbdfake.Chunk(1, 0, r.Handle, nil))
		}
		held = nil
	}}
	copy(disk[:512], make([]byte, 512)) // what the hole chunk says
	uri := f.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := nbd.Dial(ctx, uri, nbd.ClientOptions{MetaContexts: []string{nbd.BaseAllocation}, MaxRequest: 128 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make([]byte, len(disk))
	if err := c.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(disk); i += 128 << 10 {
		copy(disk[i:i+512], make([]byte, 512))
	}
	if !bytes.Equal(got, disk) {
		t.Fatal("read differs")
	}
	extents, err := c.BlockStatus(ctx, nbd.BaseAllocation, 0, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if len(extents) != 16 || extents[15] != (nbd.Extent{Offset: 15 * 4096, Length: 4096, Flags: 1}) {
		t.Errorf("extents %v", extents)
	}
}

// TestClientCancel: a request the server never answers ends when its
// context does, and Close still returns.
func TestClientCancel(t *testing.T) {
	f := &nbdfake.Server{Size: 1 << 20, Answer: func(*nbdfake.Conn, nbdfake.Request) {}}
	uri := f.Start(t)
	c, err := nbd.Dial(context.Background(), uri, nbd.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.ReadAt(ctx, make([]byte, 4096), 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("read never answered: %v, want the context's error", err)
	}
	c.Close()
}
