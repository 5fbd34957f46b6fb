package nbd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ErrProtocol is wrapped by every error that says a server broke the NBD
// protocol: a bad magic, a length out of bounds, a reply nobody asked for.
var ErrProtocol = errors.New("server broke the NBD protocol")

// ErrNoExport is wrapped when a server has no export of the name asked for.
var ErrNoExport = errors.New("no such NBD export")

// protocolError is an ErrProtocol that says what was wrong.
func protocolError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// Bounds on what a server may send in the handshake.
const (
	maxOptionReplyLength = 64 << 10 // no reply we understand needs more
	maxOptionReplies     = 1 << 16  // replies to one option (NBD_OPT_LIST's exports, contexts)
	maxMetaContexts      = 64       // contexts a client may ask for at once
)

// negotiated is what a client's handshake settled for one connection.
type negotiated struct {
	info       exportInfo
	structured bool              // structured replies
	contexts   map[string]uint32 // meta context name → the ID this connection's server gave it
}

// handshake is the client side of the fixed newstyle handshake.
type handshake struct {
	r        *bufio.Reader
	w        io.Writer
	noZeroes bool // the server leaves out NBD_OPT_EXPORT_NAME's 124 zeroes
}

// greet reads the server's greeting and answers with the client's flags.
func (h *handshake) greet() error {
	var hello [18]byte
	if _, err := io.ReadFull(h.r, hello[:]); err != nil {
		return fmt.Errorf("reading the greeting: %w", unexpected(err))
	}
	if m := binary.BigEndian.Uint64(hello[:]); m != magicNBD {
		return protocolError("greeting magic %#x is not NBDMAGIC", m)
	}
	if m := binary.BigEndian.Uint64(hello[8:]); m != magicIHaveOpt {
		if m == magicOldstyle {
			return protocolError("the server speaks the oldstyle handshake, which diskpoint does not")
		}
		return protocolError("greeting magic %#x is not IHAVEOPT", m)
	}
	flags := binary.BigEndian.Uint16(hello[16:])
	if flags&flagFixedNewstyle == 0 {
		return protocolError("the server does not speak fixed newstyle")
	}
	client := uint32(clientFixed)
	if flags&flagNoZeroes != 0 {
		client |= clientNoZeroes
		h.noZeroes = true
	}
	_, err := h.w.Write(binary.BigEndian.AppendUint32(nil, client))
	return err
}

// option sends one option.
func (h *handshake) option(opt uint32, data []byte) error {
	_, err := h.w.Write(appendOption(nil, opt, data))
	return err
}

// reply reads one option reply to opt: its type and data.
func (h *handshake) reply(opt uint32) (uint32, []byte, error) {
	var head [optionReplyHeaderSize]byte
	if _, err := io.ReadFull(h.r, head[:]); err != nil {
		return 0, nil, fmt.Errorf("reading the reply to option %d: %w", opt, unexpected(err))
	}
	rh, err := parseOptionReplyHeader(head[:])
	if err != nil {
		return 0, nil, protocolError("%v", err)
	}
	if rh.opt != opt {
		return 0, nil, protocolError("reply to option %d where option %d was asked", rh.opt, opt)
	}
	if rh.length > maxOptionReplyLength {
		return 0, nil, protocolError("reply to option %d of %d bytes", opt, rh.length)
	}
	data := make([]byte, rh.length)
	if _, err := io.ReadFull(h.r, data); err != nil {
		return 0, nil, fmt.Errorf("reading the reply to option %d: %w", opt, unexpected(err))
	}
	return rh.typ, data, nil
}

// refusal is the error a server's NBD_REP_ERR_* reply to opt means.
func refusal(opt, typ uint32, data []byte) error {
	msg := strings.ToValidUTF8(string(data[:min(len(data), maxErrorMessage)]), "?")
	var what string
	switch typ {
	case repErrUnsup:
		what = "unsupported"
	case repErrInval:
		what = "invalid"
	case repErrUnkn:
		return fmt.Errorf("%w: %s", ErrNoExport, msg)
	case 1<<31 + 2:
		what = "forbidden by policy"
	case 1<<31 + 5:
		what = "TLS required"
	case 1<<31 + 7:
		what = "shutting down"
	default:
		what = fmt.Sprintf("error %#x", typ)
	}
	return fmt.Errorf("option %d refused (%s): %s", opt, what, msg)
}

// structuredReplies asks for structured replies; false if the server
// does not offer them.
func (h *handshake) structuredReplies() (bool, error) {
	if err := h.option(optStructuredReply, nil); err != nil {
		return false, err
	}
	typ, data, err := h.reply(optStructuredReply)
	switch {
	case err != nil:
		return false, err
	case typ == repAck:
		if len(data) != 0 {
			return false, protocolError("acknowledgement with %d bytes of data", len(data))
		}
		return true, nil
	case typ&(1<<31) != 0:
		return false, nil
	}
	return false, protocolError("reply %#x to NBD_OPT_STRUCTURED_REPLY", typ)
}

// setMetaContexts selects contexts for export; it returns those the
// server knows, by name, with their IDs. Only names asked for are
// accepted, each once.
func (h *handshake) setMetaContexts(export string, contexts []string) (map[string]uint32, error) {
	data := binary.BigEndian.AppendUint32(nil, uint32(len(export)))
	data = append(data, export...)
	data = binary.BigEndian.AppendUint32(data, uint32(len(contexts)))
	asked := map[string]bool{}
	for _, c := range contexts {
		data = binary.BigEndian.AppendUint32(data, uint32(len(c)))
		data = append(data, c...)
		asked[c] = true
	}
	if err := h.option(optSetMetaContext, data); err != nil {
		return nil, err
	}
	got := map[string]uint32{}
	ids := map[uint32]bool{}
	for range maxOptionReplies {
		typ, data, err := h.reply(optSetMetaContext)
		if err != nil {
			return nil, err
		}
		switch {
		case typ == repAck:
			return got, nil
		case typ == repMetaContext:
			id, name, err := parseMetaContextReply(data)
			if err != nil {
				return nil, protocolError("%v", err)
			}
			if !asked[name] {
				return nil, protocolError("meta context %q, which was not asked for", name)
			}
			if _, dup := got[name]; dup || ids[id] {
				return nil, protocolError("meta context %q (ID %d) given twice", name, id)
			}
			got[name], ids[id] = id, true
		case typ&(1<<31) != 0:
			if typ == repErrUnsup {
				return map[string]uint32{}, nil // no meta contexts at all
			}
			return nil, refusal(optSetMetaContext, typ, data)
		default:
			return nil, protocolError("reply %#x to NBD_OPT_SET_META_CONTEXT", typ)
		}
	}
	return nil, protocolError("more than %d replies to NBD_OPT_SET_META_CONTEXT", maxOptionReplies)
}

// goExport ends the handshake with NBD_OPT_GO for export and returns what
// the server tells of it. A server without NBD_OPT_GO is asked with
// NBD_OPT_EXPORT_NAME instead.
func (h *handshake) goExport(export string) (exportInfo, error) {
	data := binary.BigEndian.AppendUint32(nil, uint32(len(export)))
	data = append(data, export...)
	data = binary.BigEndian.AppendUint16(data, 1)
	data = binary.BigEndian.AppendUint16(data, infoBlockSize)
	if err := h.option(optGo, data); err != nil {
		return exportInfo{}, err
	}
	var info exportInfo
	for range maxOptionReplies {
		typ, data, err := h.reply(optGo)
		if err != nil {
			return exportInfo{}, err
		}
		switch {
		case typ == repInfo:
			if err := parseInfo(data, &info); err != nil {
				return exportInfo{}, protocolError("%v", err)
			}
		case typ == repAck:
			if !info.haveExport {
				return exportInfo{}, protocolError("NBD_OPT_GO acknowledged without NBD_INFO_EXPORT")
			}
			return info, nil
		case typ == repErrUnsup:
			return h.exportName(export)
		case typ&(1<<31) != 0:
			return exportInfo{}, refusal(optGo, typ, data)
		default:
			return exportInfo{}, protocolError("reply %#x to NBD_OPT_GO", typ)
		}
	}
	return exportInfo{}, protocolError("more than %d replies to NBD_OPT_GO", maxOptionReplies)
}

// exportName is the old way to end the handshake: the server answers with
// the size and flags, or hangs up if it has no such export.
func (h *handshake) exportName(export string) (exportInfo, error) {
	if err := h.option(optExportName, []byte(export)); err != nil {
		return exportInfo{}, err
	}
	n := 10
	if !h.noZeroes {
		n += 124
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(h.r, b); err != nil {
		return exportInfo{}, fmt.Errorf("NBD_OPT_EXPORT_NAME %q: %w (no such export?)", export, unexpected(err))
	}
	info := exportInfo{size: binary.BigEndian.Uint64(b), flags: binary.BigEndian.Uint16(b[8:]), haveExport: true}
	if info.size > 1<<62 {
		return exportInfo{}, protocolError("export size %d is absurd", info.size)
	}
	return info, nil
}

// list asks for the server's exports by NBD_OPT_LIST.
func (h *handshake) list() ([]string, error) {
	if err := h.option(optList, nil); err != nil {
		return nil, err
	}
	var names []string
	for range maxOptionReplies {
		typ, data, err := h.reply(optList)
		if err != nil {
			return nil, err
		}
		switch {
		case typ == repServer:
			name, err := parseServerReply(data)
			if err != nil {
				return nil, protocolError("%v", err)
			}
			names = append(names, name)
		case typ == repAck:
			return names, nil
		case typ&(1<<31) != 0:
			return nil, refusal(optList, typ, data)
		default:
			return nil, protocolError("reply %#x to NBD_OPT_LIST", typ)
		}
	}
	return nil, protocolError("more than %d replies to NBD_OPT_LIST", maxOptionReplies)
}

// abort ends the handshake politely; the server's answer is not awaited.
func (h *handshake) abort() error { return h.option(optAbort, nil) }

// unexpected turns the io.EOF of a connection closed mid-message into
// io.ErrUnexpectedEOF: a server that hangs up mid-handshake broke it.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
