package chain

import (
	"encoding/binary"
	"fmt"
)

// An index file lists packs and the blobs each holds, so that opening a
// repository does not read every pack. It is named by the BLAKE3 of its bytes:
//
//	magic "dpi1"
//	uvarint pack count
//	per pack: pack ID (32), uvarint blob count,
//	  per blob: type (1), flags (1), uvarint offset, uvarint length,
//	  uvarint raw length, blob ID (32)
const indexMagic = "dpi1"

// indexedPack is one pack and its entries, as an index file records it.
type indexedPack struct {
	ID      ID
	Entries []packEntry
}

func encodeIndexFile(packs []indexedPack) []byte {
	size := len(indexMagic) + binary.MaxVarintLen64
	for _, p := range packs { // sized up front: no garbage from growing it
		size += IDSize + binary.MaxVarintLen64 + len(p.Entries)*(2+3*binary.MaxVarintLen32+IDSize)
	}
	buf := append(make([]byte, 0, size), indexMagic...)
	buf = binary.AppendUvarint(buf, uint64(len(packs)))
	for _, p := range packs {
		buf = append(buf, p.ID[:]...)
		buf = binary.AppendUvarint(buf, uint64(len(p.Entries)))
		for _, e := range p.Entries {
			var flags byte
			if e.Compressed {
				flags = flagCompressed
			}
			buf = append(buf, byte(e.Type), flags)
			buf = binary.AppendUvarint(buf, uint64(e.Offset))
			buf = binary.AppendUvarint(buf, uint64(e.Length))
			buf = binary.AppendUvarint(buf, uint64(e.RawLength))
			buf = append(buf, e.ID[:]...)
		}
	}
	return buf
}

// decodeIndexFile parses an index file. It never panics on hostile input.
func decodeIndexFile(data []byte) ([]indexedPack, error) {
	d := decoderOf(data)
	if string(d.bytes(len(indexMagic))) != indexMagic {
		return nil, fmt.Errorf("index: bad magic")
	}
	npacks := d.count(IDSize + 1)
	packs := make([]indexedPack, 0, npacks)
	for range npacks {
		var p indexedPack
		copy(p.ID[:], d.bytes(IDSize))
		nblobs := d.count(2 + 3 + IDSize)
		p.Entries = make([]packEntry, 0, nblobs)
		for range nblobs {
			head := d.bytes(2)
			if d.err != nil {
				break
			}
			if head[1]&^flagCompressed != 0 {
				return nil, fmt.Errorf("index: pack %s: unknown blob flags %#x", p.ID.Short(), head[1])
			}
			e := packEntry{Type: BlobType(head[0]), Compressed: head[1]&flagCompressed != 0}
			e.Offset = d.uint32()
			e.Length = d.uint32()
			e.RawLength = d.uint32()
			copy(e.ID[:], d.bytes(IDSize))
			if d.err == nil {
				if err := e.check(); err != nil {
					return nil, fmt.Errorf("index: pack %s: %w", p.ID.Short(), err)
				}
			}
			p.Entries = append(p.Entries, e)
		}
		packs = append(packs, p)
	}
	if d.err != nil {
		return nil, fmt.Errorf("index: %w", d.err)
	}
	if len(d.rest) != 0 {
		return nil, fmt.Errorf("index: %d trailing bytes", len(d.rest))
	}
	return packs, nil
}

// byteDecoder reads a binary format and remembers the first error, so that
// decoders read straight through and check once.
type byteDecoder struct {
	rest []byte
	err  error
}

func decoderOf(b []byte) *byteDecoder { return &byteDecoder{rest: b} }

func (d *byteDecoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
	d.rest = nil
}

func (d *byteDecoder) bytes(n int) []byte {
	if d.err != nil {
		return make([]byte, n)
	}
	if len(d.rest) < n {
		d.fail("truncated: want %d bytes, have %d", n, len(d.rest))
		return make([]byte, n)
	}
	b := d.rest[:n]
	d.rest = d.rest[n:]
	return b
}

func (d *byteDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.rest)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.rest = d.rest[n:]
	return v
}

func (d *byteDecoder) uint32() uint32 {
	v := d.uvarint()
	if v > 1<<32-1 {
		d.fail("value %d does not fit 32 bits", v)
		return 0
	}
	return uint32(v)
}

// count reads an element count and refuses one that the remaining bytes
// cannot hold (each element takes at least minSize bytes), so a hostile
// count cannot make us allocate.
func (d *byteDecoder) count(minSize int) int {
	v := d.uvarint()
	if d.err == nil && v > uint64(len(d.rest)/minSize) {
		d.fail("count %d exceeds the %d bytes left", v, len(d.rest))
		return 0
	}
	return int(v)
}
