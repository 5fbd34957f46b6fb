package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Client is a QMP (QEMU Machine Protocol) connection to QEMU or
// qemu-storage-daemon: JSON lines over a Unix socket. Several goroutines
// may call Execute at once; replies are matched to commands by id, and
// asynchronous events between them are skipped.
//
// Every line the server sends is hostile input: bounded (maxQMPLine) and
// validated; a server that breaks the protocol ends the connection with an
// error naming it.
type Client struct {
	conn   net.Conn
	socket string

	wmu sync.Mutex // one command written at a time

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan *qmpMessage
	err     error         // why the connection ended, once it has
	done    chan struct{} // closed when the reader stops
}

// Dial connects to the QMP socket at path, reads the greeting and leaves
// capabilities negotiation mode (qmp_capabilities).
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", path, err)
	}
	c := &Client{conn: conn, socket: path, pending: map[uint64]chan *qmpMessage{}, done: make(chan struct{})}
	lines := bufio.NewScanner(conn)
	lines.Buffer(make([]byte, 0, 64<<10), maxQMPLine)

	// The greeting comes first, before any command: read it here, under
	// the context (the reader goroutine owns the connection afterwards).
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	greeting, err := readQMPMessage(lines)
	if !stop() || err != nil {
		conn.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("qmp %s: greeting: %w", path, err)
	}
	if greeting.kind() != "greeting" {
		conn.Close()
		return nil, fmt.Errorf("qmp %s: the first message is a %s, not the greeting", path, greeting.kind())
	}
	go c.read(lines)
	if err := c.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// readQMPMessage reads and decodes the next line.
func readQMPMessage(lines *bufio.Scanner) (*qmpMessage, error) {
	if !lines.Scan() {
		if err := lines.Err(); err != nil {
			return nil, err
		}
		return nil, errors.New("connection closed")
	}
	return decodeQMPMessage(lines.Bytes())
}

// read hands each reply to the command waiting for it, until the
// connection ends or the server breaks the protocol.
func (c *Client) read(lines *bufio.Scanner) {
	var err error
	for {
		var m *qmpMessage
		if m, err = readQMPMessage(lines); err != nil {
			break
		}
		if m.kind() == "event" {
			continue // nothing here waits for events: jobs are polled
		}
		if m.kind() == "greeting" {
			err = errors.New("a second greeting")
			break
		}
		c.mu.Lock()
		ch, ok := c.pending[*m.ID]
		delete(c.pending, *m.ID)
		c.mu.Unlock()
		if !ok {
			err = fmt.Errorf("a reply to id %d, which no command waits for", *m.ID)
			break
		}
		ch <- m // buffered: the caller may have given up
	}
	c.mu.Lock()
	c.err = fmt.Errorf("qmp %s: %w", c.socket, err)
	c.mu.Unlock()
	c.conn.Close()
	close(c.done)
}

// Execute runs command with args (nil for none) and decodes its return
// value into result (nil to ignore it). An error the server returns is a
// *QMPError. When ctx ends first, Execute returns its error; the command
// may still run on the server.
func (c *Client) Execute(ctx context.Context, command string, args, result any) error {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	c.nextID++
	id := c.nextID
	ch := make(chan *qmpMessage, 1)
	c.pending[id] = ch
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}

	line, err := json.Marshal(struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        uint64 `json:"id"`
	}{command, args, id})
	if err != nil {
		forget()
		return fmt.Errorf("qmp %s: %s: %w", c.socket, command, err)
	}
	c.wmu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetWriteDeadline(dl)
	} else {
		c.conn.SetWriteDeadline(time.Time{})
	}
	_, err = c.conn.Write(append(line, '\n'))
	c.wmu.Unlock()
	if err != nil {
		forget()
		return fmt.Errorf("qmp %s: %s: %w", c.socket, command, err)
	}

	select {
	case m := <-ch:
		if m.Error != nil {
			m.Error.Command = command
			return m.Error
		}
		if result != nil {
			if err := json.Unmarshal(m.Return, result); err != nil {
				return fmt.Errorf("qmp %s: %s: the return value: %w", c.socket, command, err)
			}
		}
		return nil
	case <-c.done:
		forget()
		c.mu.Lock()
		defer c.mu.Unlock()
		return fmt.Errorf("%s: %w", command, c.err)
	case <-ctx.Done():
		// Still pending: the reply that may come is taken and dropped,
		// not mistaken for one no command asked for.
		return fmt.Errorf("qmp %s: %s: %w", c.socket, command, ctx.Err())
	}
}

// Close ends the connection.
func (c *Client) Close() error {
	err := c.conn.Close()
	<-c.done
	return err
}
