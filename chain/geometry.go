package chain

// Geometry is the shape of a disk's block map: how many blocks, how many
// leaves, how tall the tree. It follows from the disk's size, the block size
// and the tree's fanout alone, so a block's place in the tree is known
// without reading anything.
type Geometry struct {
	Size      int64 // disk size in bytes
	BlockSize int
	Fanout    int // IDs per tree node
}

// Blocks is the number of blocks; the last one may be short.
func (g Geometry) Blocks() int64 { return ceilDiv(g.Size, int64(g.BlockSize)) }

// BlockLength is the length of block i: BlockSize, or less for the last.
func (g Geometry) BlockLength(i int64) int {
	return int(min(int64(g.BlockSize), g.Size-i*int64(g.BlockSize)))
}

// Leaves is the number of leaf nodes, each listing up to Fanout blocks.
func (g Geometry) Leaves() int64 { return ceilDiv(g.Blocks(), int64(g.Fanout)) }

// LeafBlocks is the number of blocks leaf j lists.
func (g Geometry) LeafBlocks(j int64) int {
	return int(min(int64(g.Fanout), g.Blocks()-j*int64(g.Fanout)))
}

// LeafBytes is the number of disk bytes leaf j covers, and LeafOffset where
// they start.
func (g Geometry) LeafBytes(j int64) int64 {
	return min(g.LeafSpan(), g.Size-g.LeafOffset(j))
}

// LeafOffset is the disk offset of leaf j's first block.
func (g Geometry) LeafOffset(j int64) int64 { return j * g.LeafSpan() }

// LeafSpan is the bytes a full leaf covers.
func (g Geometry) LeafSpan() int64 { return int64(g.Fanout) * int64(g.BlockSize) }

// SubtreeBytes is the number of disk bytes node n of level covers (a
// leaf's are LeafBytes).
func (g Geometry) SubtreeBytes(level int, n int64) int64 {
	first := n * g.leavesUnder(level)
	if first >= g.Leaves() {
		return 0
	}
	return min(g.leavesUnder(level)*g.LeafSpan(), g.Size-g.LeafOffset(first))
}

// Height is the level of the root: 0 when one leaf holds every block.
func (g Geometry) Height() int {
	h := 0
	for n := g.Leaves(); n > 1; n = ceilDiv(n, int64(g.Fanout)) {
		h++
	}
	return h
}

// nodesAt is the number of nodes at level (0 = leaves).
func (g Geometry) nodesAt(level int) int64 {
	n := g.Leaves()
	for range level {
		n = ceilDiv(n, int64(g.Fanout))
	}
	return n
}

// entries is how many IDs node n of level holds.
func (g Geometry) entries(level int, n int64) int {
	if level == 0 {
		return g.LeafBlocks(n)
	}
	return int(min(int64(g.Fanout), g.nodesAt(level-1)-n*int64(g.Fanout)))
}

// leavesUnder is how many leaves a node of level covers when full.
func (g Geometry) leavesUnder(level int) int64 {
	n := int64(1)
	for range level {
		n *= int64(g.Fanout)
	}
	return n
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }
