package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"sync"
	"testing"
)

// FuzzSession feeds arbitrary client bytes to a session: whatever they are,
// the server must answer or hang up, never panic or allocate absurdly.
func FuzzSession(f *testing.F) {
	goOpt := func(name string) []byte {
		data := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
		data = append(data, name...)
		data = binary.BigEndian.AppendUint16(data, 1)
		data = binary.BigEndian.AppendUint16(data, infoBlockSize)
		return appendOption(nil, optGo, data)
	}
	read := func(off uint64, n uint32) []byte { return appendRequest(nil, 0, cmdRead, 1, off, n) }
	flags := binary.BigEndian.AppendUint32(nil, clientFixed|clientNoZeroes)
	f.Add(append(append(append([]byte(nil), flags...), goOpt("d")...), read(0, 512)...))
	f.Add(append(append(append([]byte(nil), flags...), goOpt("")...), read(1<<40, 1<<31)...))
	f.Add(append(append([]byte(nil), flags...), goOpt("nope")...))
	f.Add(flags)
	f.Add([]byte{0, 0, 0, 1, 0xff})
	// Structured replies, base:allocation, block status and a read.
	meta := binary.BigEndian.AppendUint32(nil, 1)
	meta = append(meta, 'd')
	meta = binary.BigEndian.AppendUint32(meta, 1)
	meta = binary.BigEndian.AppendUint32(meta, uint32(len(BaseAllocation)))
	meta = append(meta, BaseAllocation...)
	status := appendRequest(nil, 0, cmdBlockStatus, 2, 0, 9000)
	structured := append(append([]byte(nil), flags...), appendOption(nil, optStructuredReply, nil)...)
	structured = appendOption(structured, optListMetaContext, meta)
	structured = appendOption(structured, optSetMetaContext, meta)
	f.Add(append(append(append(structured, goOpt("d")...), status...), read(100, 512)...))
	f.Add(append(appendOption(append([]byte(nil), flags...), optSetMetaContext, meta), goOpt("d")...))
	disk := bytes.Repeat([]byte("diskpoint"), 1000)
	clear(disk[1000:5000])
	s := &Server{Exports: map[string]*Export{"d": {Name: "d", Size: int64(len(disk)), Disk: fuzzZeroRuns{bytes.NewReader(disk), disk}}}, MaxRead: 64 << 10}
	f.Fuzz(func(t *testing.T, input []byte) {
		rw := struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(input), io.Discard}
		s.serve(context.Background(), rw) // returns when the input runs out, at the latest
	})
}

// fuzzZeroRuns is a disk whose zero bytes are holes, in runs of at most 1000.
type fuzzZeroRuns struct {
	*bytes.Reader
	disk []byte
}

func (z fuzzZeroRuns) Extent(ctx context.Context, off int64) (int64, bool, error) {
	zero := z.disk[off] == 0
	n := int64(1)
	for off+n < int64(len(z.disk)) && n < 1000 && (z.disk[off+n] == 0) == zero {
		n++
	}
	return n, zero, nil
}

// fuzzServerConn is a connection whose peer's bytes are a fuzz input;
// what the client writes is dropped.
type fuzzServerConn struct {
	mu     sync.Mutex
	r      *bytes.Reader
	closed bool
}

func (c *fuzzServerConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, io.ErrClosedPipe
	}
	return c.r.Read(p)
}

func (c *fuzzServerConn) Write(p []byte) (int, error) { return len(p), nil }

func (c *fuzzServerConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}

// fuzzHandshake is an honest server's side of the handshake: structured
// replies, base:allocation as context 1, an export of size bytes.
func fuzzHandshake(size uint64) []byte {
	b := binary.BigEndian.AppendUint64(nil, magicNBD)
	b = binary.BigEndian.AppendUint64(b, magicIHaveOpt)
	b = binary.BigEndian.AppendUint16(b, flagFixedNewstyle|flagNoZeroes)
	b = appendOptionReply(b, optStructuredReply, repAck, nil)
	b = appendOptionReply(b, optSetMetaContext, repMetaContext, append(binary.BigEndian.AppendUint32(nil, 1), BaseAllocation...))
	b = appendOptionReply(b, optSetMetaContext, repAck, nil)
	info := binary.BigEndian.AppendUint16(nil, infoExport)
	info = binary.BigEndian.AppendUint64(info, size)
	b = appendOptionReply(b, optGo, repInfo, binary.BigEndian.AppendUint16(info, transHasFlags|transReadOnly))
	bs := binary.BigEndian.AppendUint16(nil, infoBlockSize)
	bs = binary.BigEndian.AppendUint32(bs, 1)
	bs = binary.BigEndian.AppendUint32(bs, 4096)
	b = appendOptionReply(b, optGo, repInfo, binary.BigEndian.AppendUint32(bs, 1<<20))
	return appendOptionReply(b, optGo, repAck, nil)
}

// FuzzClient feeds arbitrary server bytes to a client that negotiates,
// reads and asks for block status: whatever they are, it must return data
// the server sent or an error, never panic, hang or allocate absurdly.
func FuzzClient(f *testing.F) {
	const size = 64 << 10
	hs := fuzzHandshake(size)
	handle := []byte{0, 0, 0, 0, 0, 0, 0, 1}
	data := appendChunkHeader(nil, replyFlagDone, chunkOffsetData, handle, 8+4096)
	data = binary.BigEndian.AppendUint64(data, 0)
	data = append(data, bytes.Repeat([]byte{7}, 4096)...)
	handle2 := []byte{0, 0, 0, 0, 0, 0, 0, 2}
	status := appendBlockStatus(nil, 1, []Extent{{Length: 4096, Flags: StateHole}, {Length: size - 4096}})
	statusChunk := append(appendChunkHeader(nil, replyFlagDone, chunkBlockStatus, handle2, uint32(len(status))), status...)
	simple := binary.BigEndian.AppendUint32(nil, magicSimpleReply)
	simple = binary.BigEndian.AppendUint32(simple, 0)
	simple = append(append(simple, handle...), make([]byte, 4096)...)
	errChunk := appendChunkHeader(nil, replyFlagDone, chunkError, handle, 6+3)
	errChunk = append(binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint32(errChunk, errIO), 3), "bad"...)
	f.Add(append(append(append([]byte(nil), hs...), data...), statusChunk...))
	f.Add(append(append(append([]byte(nil), hs...), simple...), statusChunk...))
	f.Add(append(append([]byte(nil), hs...), errChunk...))
	f.Add(hs)
	f.Add(hs[:30])
	f.Fuzz(func(t *testing.T, input []byte) {
		conn := &fuzzServerConn{r: bytes.NewReader(input)}
		n, r, err := negotiateClient(context.Background(), conn, "", []string{BaseAllocation})
		if err != nil || n.info.size < 4096 {
			return
		}
		// The requests are in flight before the reader starts, as they
		// would be with a real server, which answers only what it was asked.
		c := newClientConn("fuzz", conn, r, n, 2)
		read := &request{cmd: cmdRead, length: 4096, buf: make([]byte, 4096), done: make(chan struct{})}
		length := uint32(min(n.info.size, 1<<30))
		status := &request{cmd: cmdBlockStatus, length: length, status: map[uint32]bool{}, extents: map[string][]Extent{}, done: make(chan struct{})}
		c.pending[1], c.pending[2] = read, status
		c.readReplies() // until the input runs out or breaks the protocol
		if read.err == nil && read.remote == nil && read.covered.total() != 4096 {
			t.Fatalf("a read of 4096 bytes completed with %d", read.covered.total())
		}
		if status.err == nil && status.remote == nil {
			extents, ok := status.extents[BaseAllocation]
			if !ok {
				t.Fatal("block status completed without extents")
			}
			pos := int64(0)
			for i, e := range extents {
				if e.Offset != pos || e.Length <= 0 || uint64(e.Offset+e.Length) > n.info.size || i < len(extents)-1 && e.Offset+e.Length > int64(length) {
					t.Fatalf("extents %v break the rules", extents)
				}
				pos += e.Length
			}
		}
	})
}

// FuzzReplyDecoders feeds arbitrary payloads to the decoders of option
// replies and reply chunks.
func FuzzReplyDecoders(f *testing.F) {
	f.Add(uint16(chunkBlockStatus), appendBlockStatus(nil, 1, []Extent{{Length: 512, Flags: 3}}))
	f.Add(uint16(chunkError), []byte{0, 0, 0, 5, 0, 2, 'h', 'i'})
	f.Add(uint16(chunkErrorOffset), []byte{0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Add(uint16(infoBlockSize), []byte{0, 3, 0, 0, 2, 0, 0, 0, 16, 0, 0, 1, 0, 0})
	f.Fuzz(func(t *testing.T, typ uint16, payload []byte) {
		if _, extents, err := parseBlockStatus(payload, 1<<40); err == nil {
			if len(extents) == 0 || len(extents) != (len(payload)-4)/8 {
				t.Fatalf("%d extents from %d bytes", len(extents), len(payload))
			}
		}
		if errno, msg, err := parseErrorChunk(typ, payload); err == nil && (errno == 0 || len(msg) > len(payload)) {
			t.Fatalf("error chunk: errno %d, message of %d bytes from %d", errno, len(msg), len(payload))
		}
		var info exportInfo
		parseInfo(payload, &info)
		parseMetaContextReply(payload)
		parseServerReply(payload)
		parseOptionReplyHeader(payload)
	})
}
