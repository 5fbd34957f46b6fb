package qemu

import (
	"context"
	"fmt"
	"time"
)

// blockNode is what query-named-block-nodes says of a node.
type blockNode struct {
	NodeName string `json:"node-name"`
	Image    struct {
		VirtualSize int64 `json:"virtual-size"`
	} `json:"image"`
	DirtyBitmaps []dirtyBitmap `json:"dirty-bitmaps"`
}

// dirtyBitmap is one of a node's dirty bitmaps.
type dirtyBitmap struct {
	Name       string `json:"name"`
	Recording  bool   `json:"recording"`
	Persistent bool   `json:"persistent"`
	Count      int64  `json:"count"`
}

// bitmap returns the node's bitmap named name, or nil.
func (n *blockNode) bitmap(name string) *dirtyBitmap {
	for i := range n.DirtyBitmaps {
		if name != "" && n.DirtyBitmaps[i].Name == name {
			return &n.DirtyBitmaps[i]
		}
	}
	return nil
}

// blockNode returns the node named name.
func (c *Client) blockNode(ctx context.Context, name string) (*blockNode, error) {
	var nodes []blockNode
	if err := c.Execute(ctx, "query-named-block-nodes", map[string]any{"flat": true}, &nodes); err != nil {
		return nil, err
	}
	for i := range nodes {
		if nodes[i].NodeName == name {
			return &nodes[i], nil
		}
	}
	return nil, fmt.Errorf("qmp %s: no block node %q", c.socket, name)
}

// nodeNames returns the names of every named block node.
func (c *Client) nodeNames(ctx context.Context) (map[string]bool, error) {
	return queryNames(ctx, c, "query-named-block-nodes", map[string]any{"flat": true}, func(n blockNode) string { return n.NodeName })
}

// jobIDs returns the ids of the block jobs.
func (c *Client) jobIDs(ctx context.Context) (map[string]bool, error) {
	return queryNames(ctx, c, "query-block-jobs", nil, func(j blockJob) string { return j.Device })
}

// exportIDs returns the ids of the block exports.
func (c *Client) exportIDs(ctx context.Context) (map[string]bool, error) {
	return queryNames(ctx, c, "query-block-exports", nil, func(e blockExport) string { return e.ID })
}

// blockJob and blockExport are what query-block-jobs and
// query-block-exports say of a job and an export: their ids.
type (
	blockJob struct {
		Device string `json:"device"`
	}
	blockExport struct {
		ID string `json:"id"`
	}
)

// queryNames runs a query command that returns a list of T and returns
// the set of the names name gives its items.
func queryNames[T any](ctx context.Context, c *Client, command string, args any, name func(T) string) (map[string]bool, error) {
	var items []T
	if err := c.Execute(ctx, command, args, &items); err != nil {
		return nil, err
	}
	names := make(map[string]bool, len(items))
	for _, it := range items {
		names[name(it)] = true
	}
	return names, nil
}

// waitGone polls list until id is no longer in it: a cancelled job and a
// deleted export go away asynchronously, and what they hold cannot be
// deleted before.
func (c *Client) waitGone(ctx context.Context, id string, list func(context.Context) (map[string]bool, error)) error {
	for delay := time.Millisecond; ; delay = min(2*delay, 100*time.Millisecond) {
		ids, err := list(ctx)
		if err != nil || !ids[id] {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("qmp %s: waiting for %q to go: %w", c.socket, id, ctx.Err())
		case <-time.After(delay):
		}
	}
}
