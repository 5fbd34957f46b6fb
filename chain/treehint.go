package chain

import "context"

// treePackKey marks a context under which a pack of block-map (tree)
// nodes is read or written.
type treePackKey struct{}

// withTreePack returns ctx marked as an access to a tree pack.
func withTreePack(ctx context.Context) context.Context {
	if IsTreePackAccess(ctx) {
		return ctx
	}
	return context.WithValue(ctx, treePackKey{}, true)
}

// IsTreePackAccess reports whether a Store call with ctx reads or writes a
// pack of block-map (tree) nodes rather than disk data. Tree nodes are
// packed apart from data (a pack holds one kind), are few, and are read by
// every incremental create and restore: a caching store (chain/cachestore)
// keeps those packs and leaves the data packs alone.
func IsTreePackAccess(ctx context.Context) bool {
	v, _ := ctx.Value(treePackKey{}).(bool)
	return v
}
