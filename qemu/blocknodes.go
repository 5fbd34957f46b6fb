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
	var nodes []blockNode
	if err := c.Execute(ctx, "query-named-block-nodes", map[string]any{"flat": true}, &nodes); err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, n := range nodes {
		names[n.NodeName] = true
	}
	return names, nil
}

// jobIDs returns the ids of the block jobs.
func (c *Client) jobIDs(ctx context.Context) (map[string]bool, error) {
	var jobs []struct {
		Device string `json:"device"`
	}
	if err := c.Execute(ctx, "query-block-jobs", nil, &jobs); err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for _, j := range jobs {
		ids[j.Device] = true
	}
	return ids, nil
}

// exportIDs returns the ids of the block exports.
func (c *Client) exportIDs(ctx context.Context) (map[string]bool, error) {
	var exports []struct {
		ID string `json:"id"`
	}
	if err := c.Execute(ctx, "query-block-exports", nil, &exports); err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for _, e := range exports {
		ids[e.ID] = true
	}
	return ids, nil
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
