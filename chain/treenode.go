package chain

import (
	"encoding/binary"
	"fmt"
)

// A tree node lists IDs: of blocks (level 0, a leaf) or of the nodes one
// level down. Encoding: magic "dpt1", level (1 byte), three zero bytes,
// count (uint32 little-endian), then count IDs.
const (
	treeMagic      = "dpt1"
	treeHeaderSize = 4 + 4 + 4
)

func encodeTreeNode(dst []byte, level int, ids []ID) []byte {
	dst = append(dst, treeMagic...)
	dst = append(dst, byte(level), 0, 0, 0)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(ids)))
	for _, id := range ids {
		dst = append(dst, id[:]...)
	}
	return dst
}

// decodeTreeNode parses a node and returns its level and IDs (appended to
// dst). It never panics on hostile input.
func decodeTreeNode(dst []ID, data []byte) (int, []ID, error) {
	if len(data) < treeHeaderSize || string(data[:4]) != treeMagic {
		return 0, nil, fmt.Errorf("tree node: bad magic or header")
	}
	if data[5] != 0 || data[6] != 0 || data[7] != 0 {
		return 0, nil, fmt.Errorf("tree node: reserved bytes set")
	}
	level := int(data[4])
	count := binary.LittleEndian.Uint32(data[8:])
	body := data[treeHeaderSize:]
	if count == 0 || uint64(len(body)) != uint64(count)*IDSize {
		return 0, nil, fmt.Errorf("tree node: %d IDs do not fill %d bytes", count, len(body))
	}
	for p := body; len(p) > 0; p = p[IDSize:] {
		dst = append(dst, ID(p[:IDSize]))
	}
	return level, dst, nil
}

func allZero(ids []ID) bool {
	for _, id := range ids {
		if !id.IsZero() {
			return false
		}
	}
	return true
}
