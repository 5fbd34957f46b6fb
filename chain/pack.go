package chain

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
)

// BlobType says what a blob holds.
type BlobType uint8

const (
	// DataBlob holds a block of disk data, or a VM configuration.
	DataBlob BlobType = 1
	// TreeBlob holds a block-map node.
	TreeBlob BlobType = 2
)

func (t BlobType) String() string {
	switch t {
	case DataBlob:
		return "data"
	case TreeBlob:
		return "tree"
	}
	return fmt.Sprintf("blobtype(%d)", uint8(t))
}

// packEntry locates one blob inside a pack.
type packEntry struct {
	ID         ID
	Type       BlobType
	Compressed bool
	Offset     uint32 // where the stored bytes start in the pack
	Length     uint32 // stored (possibly compressed) length
	RawLength  uint32 // plaintext length
}

// A pack is the concatenation of its blobs' stored bytes, then a header that
// lists them, then an 8-byte trailer: the header's length and a magic. Each
// header entry is type (1), flags (1), stored length (4), raw length (4), ID
// (32); offsets follow from the order. The pack is named by the BLAKE3 of all
// of its bytes. See FORMAT.md.
//
// An encrypted version 2 repository's packs seal the header (magic "dpk2"):
// the header is nonce (24) | the entries sealed | tag (16), so a pack shows
// how many blobs it holds, but not where one ends and the next begins.
const (
	packMagic       = "dpk1"
	sealedPackMagic = "dpk2"
	packEntrySize   = 1 + 1 + 4 + 4 + IDSize
	packTrailerSize = 4 + 4 // header length, magic
	flagCompressed  = 1
	maxBlobSize     = 64 << 20 // larger than any block, tree node or config blob we write
)

// appendPackHeader appends the header and trailer that describe entries,
// the header sealed under keys when keys is not nil (an encrypted version 2
// repository). dst holds the pack's blobs, from its first byte.
func appendPackHeader(dst []byte, entries []packEntry, keys *subkeys2) []byte {
	start := len(dst)
	magic := packMagic
	if keys != nil {
		var plain []byte
		plain = appendPackEntries(plain, entries)
		dst = keys.sealPackHeader(dst, plain, int64(start))
		magic = sealedPackMagic
	} else {
		dst = appendPackEntries(dst, entries)
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(dst)-start))
	return append(dst, magic...)
}

func appendPackEntries(dst []byte, entries []packEntry) []byte {
	for _, e := range entries {
		var flags byte
		if e.Compressed {
			flags |= flagCompressed
		}
		dst = append(dst, byte(e.Type), flags)
		dst = binary.LittleEndian.AppendUint32(dst, e.Length)
		dst = binary.LittleEndian.AppendUint32(dst, e.RawLength)
		dst = append(dst, e.ID[:]...)
	}
	return dst
}

// packHeaderLength reads the trailer (the last packTrailerSize bytes of a
// pack of packSize bytes) of a pack whose header is not sealed, and returns
// the header's length.
func packHeaderLength(trailer []byte, packSize int64) (int, error) {
	n, sealed, err := packHeaderSpan(trailer, packSize)
	if err == nil && sealed {
		return 0, fmt.Errorf("pack header is sealed")
	}
	return n, err
}

// packHeaderSpan reads a pack's trailer: the length of its header as
// stored, and whether it is sealed.
func packHeaderSpan(trailer []byte, packSize int64) (n int, sealed bool, err error) {
	if len(trailer) != packTrailerSize {
		return 0, false, fmt.Errorf("bad pack trailer")
	}
	switch string(trailer[4:]) {
	case packMagic:
	case sealedPackMagic:
		sealed = true
	default:
		return 0, false, fmt.Errorf("bad pack trailer")
	}
	length := int64(binary.LittleEndian.Uint32(trailer))
	entries := length
	if sealed {
		entries -= sealOverhead2
	}
	if entries < 0 || entries%packEntrySize != 0 || length+int64(packTrailerSize) > packSize {
		return 0, false, fmt.Errorf("pack header length %d does not fit a pack of %d bytes", length, packSize)
	}
	return int(length), sealed, nil
}

// decodeStoredPackHeader parses a pack's header as stored (stored, of a pack
// whose blobs take the first dataSize bytes), opening it under keys if it
// is sealed. An encrypted version 2 repository (keys not nil) has only
// sealed headers, and a plain one none.
func decodeStoredPackHeader(stored []byte, sealed bool, dataSize int64, keys *subkeys2) ([]packEntry, error) {
	switch {
	case sealed && keys == nil:
		return nil, errors.New("pack header is sealed, in a repository that is not encrypted")
	case !sealed && keys != nil:
		return nil, errors.New("pack header is not sealed, in an encrypted repository")
	case sealed:
		plain, err := open2(keys.metadata, nil, stored, sealAD(sealKindPackHeader, binary.LittleEndian.AppendUint64(nil, uint64(dataSize))))
		if err != nil {
			return nil, fmt.Errorf("header: %w", err)
		}
		stored = plain
	}
	return decodePackHeader(stored, dataSize)
}

// decodePack parses the header of a whole pack's bytes.
func decodePack(data []byte, keys *subkeys2) ([]packEntry, error) {
	if len(data) < packTrailerSize {
		return nil, errors.New("too short for a pack trailer")
	}
	n, sealed, err := packHeaderSpan(data[len(data)-packTrailerSize:], int64(len(data)))
	if err != nil {
		return nil, err
	}
	dataSize := int64(len(data) - packTrailerSize - n)
	return decodeStoredPackHeader(data[dataSize:len(data)-packTrailerSize], sealed, dataSize, keys)
}

// decodePackHeader parses a header (without the trailer) of a pack whose
// blobs occupy the first dataSize bytes.
func decodePackHeader(header []byte, dataSize int64) ([]packEntry, error) {
	if len(header)%packEntrySize != 0 {
		return nil, fmt.Errorf("pack header of %d bytes is not whole entries", len(header))
	}
	entries := make([]packEntry, 0, len(header)/packEntrySize)
	var offset int64
	for p := header; len(p) > 0; p = p[packEntrySize:] {
		if p[1]&^flagCompressed != 0 {
			return nil, fmt.Errorf("pack entry %d: unknown flags %#x", len(entries), p[1])
		}
		e := packEntry{
			Type:       BlobType(p[0]),
			Compressed: p[1]&flagCompressed != 0,
			Offset:     uint32(offset),
			Length:     binary.LittleEndian.Uint32(p[2:]),
			RawLength:  binary.LittleEndian.Uint32(p[6:]),
		}
		copy(e.ID[:], p[10:])
		if err := e.check(); err != nil {
			return nil, fmt.Errorf("pack entry %d: %w", len(entries), err)
		}
		offset += int64(e.Length)
		if offset > dataSize {
			return nil, fmt.Errorf("pack entry %d ends at %d, past the blobs' %d bytes", len(entries), offset, dataSize)
		}
		entries = append(entries, e)
	}
	if offset != dataSize {
		return nil, fmt.Errorf("pack entries cover %d bytes, blobs take %d", offset, dataSize)
	}
	return entries, nil
}

func (e packEntry) check() error {
	switch {
	case e.Type != DataBlob && e.Type != TreeBlob:
		return fmt.Errorf("blob %s: unknown type %d", e.ID.Short(), e.Type)
	case e.RawLength > maxBlobSize || e.Length > maxBlobSize:
		return fmt.Errorf("blob %s: length %d/%d over the limit", e.ID.Short(), e.Length, e.RawLength)
	case !e.Compressed && e.Length != e.RawLength && e.Length != e.RawLength+sealOverhead && e.Length != e.RawLength+sealOverhead2:
		return fmt.Errorf("blob %s: uncompressed but stored %d of %d bytes", e.ID.Short(), e.Length, e.RawLength)
	case e.ID.IsZero():
		return fmt.Errorf("blob with the reserved zero ID")
	}
	return nil
}

// packName is the store object name of a pack.
func packName(id ID) string {
	s := id.String()
	return "packs/" + s[:2] + "/" + s
}

// readPackHeader reads a stored pack's own header. Through an encrypted
// version 2 repository's store (a sealedStore), it opens the sealed header.
func readPackHeader(ctx context.Context, store Store, id ID, size int64) ([]packEntry, error) {
	name := packName(id)
	if size < packTrailerSize {
		return nil, corrupt(name, "%d bytes is too short for a pack", size)
	}
	trailer := make([]byte, packTrailerSize)
	if err := store.ReadAt(ctx, name, trailer, size-packTrailerSize); err != nil {
		return nil, err
	}
	n, sealed, err := packHeaderSpan(trailer, size)
	if err != nil {
		return nil, corrupt(name, "%v", err)
	}
	header := make([]byte, n)
	dataSize := size - packTrailerSize - int64(n)
	if err := store.ReadAt(ctx, name, header, dataSize); err != nil {
		return nil, err
	}
	entries, err := decodeStoredPackHeader(header, sealed, dataSize, storeKeys(store))
	if err != nil {
		return nil, corrupt(name, "%v", err)
	}
	return entries, nil
}

// storeKeys returns the keys of an encrypted version 2 repository's store,
// or nil for any other store.
func storeKeys(store Store) *subkeys2 {
	if s, ok := store.(*sealedStore); ok {
		return s.keys
	}
	return nil
}
