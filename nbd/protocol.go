package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Constants of the NBD protocol (doc/proto.md in the NBD project).
const (
	magicNBD             = 0x4e42444d41474943 // "NBDMAGIC"
	magicIHaveOpt        = 0x49484156454f5054 // "IHAVEOPT"
	magicOldstyle        = 0x0000420281861253 // an oldstyle server, which we do not speak
	magicOptionReply     = 0x0003e889045565a9
	magicRequest         = 0x25609513
	magicSimpleReply     = 0x67446698
	magicStructuredReply = 0x668e33ef

	flagFixedNewstyle = 1 << 0 // handshake flags, server
	flagNoZeroes      = 1 << 1
	clientFixed       = 1 << 0 // handshake flags, client
	clientNoZeroes    = 1 << 1

	optExportName      = 1
	optAbort           = 2
	optList            = 3
	optInfo            = 6
	optGo              = 7
	optStructuredReply = 8
	optListMetaContext = 9
	optSetMetaContext  = 10

	repAck         = 1
	repServer      = 2
	repInfo        = 3
	repMetaContext = 4
	repErrUnsup    = 1<<31 + 1
	repErrInval    = 1<<31 + 3
	repErrUnkn     = 1<<31 + 6

	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3

	transHasFlags     = 1 << 0
	transReadOnly     = 1 << 1
	transCanMultiConn = 1 << 8

	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdTrim        = 4
	cmdWriteZeroes = 6
	cmdBlockStatus = 7

	replyFlagDone = 1 << 0 // structured reply flags

	chunkNone        = 0 // structured reply chunk types
	chunkOffsetData  = 1
	chunkOffsetHole  = 2
	chunkBlockStatus = 5
	chunkErrorBit    = 1 << 15
	chunkError       = chunkErrorBit + 1
	chunkErrorOffset = chunkErrorBit + 2

	errPerm  = 1
	errIO    = 5
	errInval = 22

	requestHeaderSize     = 28
	simpleReplySize       = 16
	structuredReplySize   = 20
	optionReplyHeaderSize = 20
	maxOptionLength       = 64 << 10 // no option we understand needs more
)

// Meta contexts a client may ask for (NBD_OPT_SET_META_CONTEXT).
const (
	// BaseAllocation is the standard context of allocation: its extents
	// carry StateHole and StateZero.
	BaseAllocation = "base:allocation"
	// DirtyBitmapPrefix, followed by a bitmap's name, is QEMU's context of
	// a dirty bitmap: its extents carry StateDirty.
	DirtyBitmapPrefix = "qemu:dirty-bitmap:"
)

// Extent flags of the meta contexts above.
const (
	StateHole  = 1 << 0 // base:allocation: not allocated; reads as zeroes unless StateZero is clear
	StateZero  = 1 << 1 // base:allocation: reads as zeroes
	StateDirty = 1 << 0 // qemu:dirty-bitmap: written since the bitmap started
)

// DirtyBitmap is the meta context of QEMU's dirty bitmap name.
func DirtyBitmap(name string) string { return DirtyBitmapPrefix + name }

// appendOptionReply encodes a server's option reply (header and data).
func appendOptionReply(b []byte, opt, typ uint32, data []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, magicOptionReply)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// appendOption encodes a client's option (header and data).
func appendOption(b []byte, opt uint32, data []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, magicIHaveOpt)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// appendRequest encodes a transmission request header.
func appendRequest(b []byte, flags, typ uint16, handle, offset uint64, length uint32) []byte {
	b = binary.BigEndian.AppendUint32(b, magicRequest)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	b = binary.BigEndian.AppendUint64(b, offset)
	return binary.BigEndian.AppendUint32(b, length)
}

// appendChunkHeader encodes a structured reply chunk's header.
func appendChunkHeader(b []byte, flags, typ uint16, handle []byte, length uint32) []byte {
	b = binary.BigEndian.AppendUint32(b, magicStructuredReply)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = append(b, handle[:8]...)
	return binary.BigEndian.AppendUint32(b, length)
}

// optionReplyHeader is a decoded option reply header.
type optionReplyHeader struct {
	opt, typ, length uint32
}

// parseOptionReplyHeader decodes the 20 bytes of an option reply header.
func parseOptionReplyHeader(h []byte) (optionReplyHeader, error) {
	if len(h) != optionReplyHeaderSize {
		return optionReplyHeader{}, fmt.Errorf("option reply header of %d bytes", len(h))
	}
	if m := binary.BigEndian.Uint64(h); m != magicOptionReply {
		return optionReplyHeader{}, fmt.Errorf("option reply magic %#x", m)
	}
	return optionReplyHeader{
		opt:    binary.BigEndian.Uint32(h[8:]),
		typ:    binary.BigEndian.Uint32(h[12:]),
		length: binary.BigEndian.Uint32(h[16:]),
	}, nil
}

// exportInfo is what NBD_OPT_GO's NBD_REP_INFO replies tell of an export.
type exportInfo struct {
	size                          uint64
	flags                         uint16
	haveExport                    bool
	minBlock, prefBlock, maxBlock uint32 // 0: not told
}

// parseInfo decodes one NBD_REP_INFO reply's data into info. Types it does
// not know are ignored, as the protocol says.
func parseInfo(data []byte, info *exportInfo) error {
	if len(data) < 2 {
		return fmt.Errorf("NBD_REP_INFO of %d bytes", len(data))
	}
	switch typ := binary.BigEndian.Uint16(data); typ {
	case infoExport:
		if len(data) != 12 {
			return fmt.Errorf("NBD_INFO_EXPORT of %d bytes, want 12", len(data))
		}
		info.size = binary.BigEndian.Uint64(data[2:])
		info.flags = binary.BigEndian.Uint16(data[10:])
		info.haveExport = true
		if info.size > 1<<62 {
			return fmt.Errorf("export size %d is absurd", info.size)
		}
	case infoBlockSize:
		if len(data) != 14 {
			return fmt.Errorf("NBD_INFO_BLOCK_SIZE of %d bytes, want 14", len(data))
		}
		minB, prefB, maxB := binary.BigEndian.Uint32(data[2:]), binary.BigEndian.Uint32(data[6:]), binary.BigEndian.Uint32(data[10:])
		// The protocol: powers of two, min at most 64 KiB, min <= pref, min <= max.
		if !powerOfTwo(minB) || minB > 64<<10 || !powerOfTwo(prefB) || prefB < minB || maxB < minB {
			return fmt.Errorf("NBD_INFO_BLOCK_SIZE min %d, preferred %d, max %d breaks the protocol's rules", minB, prefB, maxB)
		}
		info.minBlock, info.prefBlock, info.maxBlock = minB, prefB, maxB
	}
	return nil
}

func powerOfTwo(x uint32) bool { return x != 0 && x&(x-1) == 0 }

// parseMetaContextReply decodes NBD_REP_META_CONTEXT: a context's ID and name.
func parseMetaContextReply(data []byte) (uint32, string, error) {
	if len(data) < 4 {
		return 0, "", fmt.Errorf("NBD_REP_META_CONTEXT of %d bytes", len(data))
	}
	return binary.BigEndian.Uint32(data), string(data[4:]), nil
}

// parseServerReply decodes NBD_REP_SERVER (a reply to NBD_OPT_LIST): an
// export's name; any description after it is dropped.
func parseServerReply(data []byte) (string, error) {
	if len(data) < 4 {
		return "", fmt.Errorf("NBD_REP_SERVER of %d bytes", len(data))
	}
	n := binary.BigEndian.Uint32(data)
	if uint64(n) > uint64(len(data)-4) {
		return "", fmt.Errorf("NBD_REP_SERVER names %d bytes but carries %d", n, len(data)-4)
	}
	return string(data[4 : 4+n]), nil
}

// Extent is a run of a disk with one state of a meta context.
type Extent struct {
	Offset, Length int64
	Flags          uint32 // StateHole|StateZero for base:allocation, StateDirty for a dirty bitmap
}

// maxBlockStatusExtents bounds one NBD_REPLY_TYPE_BLOCK_STATUS chunk: a
// server describing a 4 GiB request at 512-byte granularity in the worst
// alternation needs 8 Mi extents; we ask for less at a time (see
// blockStatusRequestLength), so 1 Mi is generous and bounds a chunk to 8 MiB.
const maxBlockStatusExtents = 1 << 20

// parseBlockStatus decodes an NBD_REPLY_TYPE_BLOCK_STATUS payload into its
// context ID and extents starting at offset. It checks only what needs no
// knowledge of the request: at least one extent, none of length zero.
func parseBlockStatus(payload []byte, offset uint64) (uint32, []Extent, error) {
	if len(payload) < 12 || (len(payload)-4)%8 != 0 {
		return 0, nil, fmt.Errorf("block status chunk of %d bytes", len(payload))
	}
	n := (len(payload) - 4) / 8
	if n > maxBlockStatusExtents {
		return 0, nil, fmt.Errorf("block status chunk of %d extents", n)
	}
	id := binary.BigEndian.Uint32(payload)
	extents := make([]Extent, n)
	pos := offset
	for i := range extents {
		e := payload[4+8*i:]
		length := binary.BigEndian.Uint32(e)
		if length == 0 {
			return 0, nil, fmt.Errorf("block status extent %d has length 0", i)
		}
		extents[i] = Extent{Offset: int64(pos), Length: int64(length), Flags: binary.BigEndian.Uint32(e[4:])}
		pos += uint64(length)
	}
	return id, extents, nil
}

// appendBlockStatus encodes an NBD_REPLY_TYPE_BLOCK_STATUS payload.
func appendBlockStatus(b []byte, id uint32, extents []Extent) []byte {
	b = binary.BigEndian.AppendUint32(b, id)
	for _, e := range extents {
		b = binary.BigEndian.AppendUint32(b, uint32(e.Length))
		b = binary.BigEndian.AppendUint32(b, e.Flags)
	}
	return b
}

// maxErrorMessage bounds the message of an error chunk; the protocol asks
// servers to keep it under 4096 bytes.
const maxErrorMessage = 4096

// parseErrorChunk decodes NBD_REPLY_TYPE_ERROR and _ERROR_OFFSET payloads:
// the errno, the message, and for _ERROR_OFFSET the offset.
func parseErrorChunk(typ uint16, payload []byte) (uint32, string, error) {
	if len(payload) < 6 {
		return 0, "", fmt.Errorf("error chunk of %d bytes", len(payload))
	}
	errno := binary.BigEndian.Uint32(payload)
	n := int(binary.BigEndian.Uint16(payload[4:]))
	want := 6 + n
	if typ == chunkErrorOffset {
		want += 8
	}
	if errno == 0 {
		return 0, "", errors.New("error chunk with errno 0")
	}
	if typ != chunkError && typ != chunkErrorOffset {
		// An error type we do not know: its errno is all we may use.
		return errno, "", nil
	}
	if len(payload) != want {
		return 0, "", fmt.Errorf("error chunk of %d bytes with a message of %d", len(payload), n)
	}
	return errno, string(payload[6 : 6+n]), nil
}

// errnoName names the errors NBD defines.
func errnoName(errno uint32) string {
	switch errno {
	case 1:
		return "EPERM"
	case 5:
		return "EIO"
	case 12:
		return "ENOMEM"
	case 22:
		return "EINVAL"
	case 28:
		return "ENOSPC"
	case 75:
		return "EOVERFLOW"
	case 95:
		return "ENOTSUP"
	case 108:
		return "ESHUTDOWN"
	}
	return fmt.Sprintf("errno %d", errno)
}
