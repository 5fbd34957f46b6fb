package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"testing"
)

// FuzzSession feeds arbitrary client bytes to a session: whatever they are,
// the server must answer or hang up, never panic or allocate absurdly.
func FuzzSession(f *testing.F) {
	goOpt := func(name string) []byte {
		b := binary.BigEndian.AppendUint64(nil, magicIHaveOpt)
		b = binary.BigEndian.AppendUint32(b, optGo)
		data := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
		data = append(data, name...)
		data = binary.BigEndian.AppendUint16(data, 1)
		data = binary.BigEndian.AppendUint16(data, infoBlockSize)
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		return append(b, data...)
	}
	read := func(off uint64, n uint32) []byte {
		b := binary.BigEndian.AppendUint32(nil, magicRequest)
		b = binary.BigEndian.AppendUint16(b, 0)
		b = binary.BigEndian.AppendUint16(b, cmdRead)
		b = binary.BigEndian.AppendUint64(b, 1)
		b = binary.BigEndian.AppendUint64(b, off)
		return binary.BigEndian.AppendUint32(b, n)
	}
	flags := binary.BigEndian.AppendUint32(nil, clientFixed|clientNoZeroes)
	f.Add(append(append(append([]byte(nil), flags...), goOpt("d")...), read(0, 512)...))
	f.Add(append(append(append([]byte(nil), flags...), goOpt("")...), read(1<<40, 1<<31)...))
	f.Add(append(append([]byte(nil), flags...), goOpt("nope")...))
	f.Add(flags)
	f.Add([]byte{0, 0, 0, 1, 0xff})
	disk := bytes.Repeat([]byte("diskpoint"), 1000)
	s := &Server{Exports: map[string]*Export{"d": {Name: "d", Size: int64(len(disk)), Disk: bytes.NewReader(disk)}}, MaxRead: 64 << 10}
	f.Fuzz(func(t *testing.T, input []byte) {
		rw := struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(input), io.Discard}
		s.serve(context.Background(), rw) // returns when the input runs out, at the latest
	})
}
