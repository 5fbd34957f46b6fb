// Package faultproxy is an HTTP-aware TCP proxy for tests, put between an
// object-store client and its server (MinIO, Azurite) to make the faults a
// network and a busy service make: connections dropped, requests stalled,
// and answers of 500, 503 or 429 with Retry-After. It counts the requests
// and bytes that pass.
//
// It reads each request off the client's connection and, by the fault in
// force, forwards it to the server on a connection of its own or answers
// it itself.
package faultproxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// Kind is a kind of fault.
type Kind int

const (
	// Pass forwards the request: no fault.
	Pass Kind = iota
	// Drop closes the client's connection without an answer.
	Drop
	// Stall keeps the connection open and never answers, until the client
	// gives up or the proxy closes.
	Stall
	// Status answers with Fault.Status (and Fault.RetryAfter, if set) and
	// an empty body, without forwarding.
	Status
	// DropAfterForward forwards the request, so that the server acts on
	// it, and then closes the client's connection instead of answering: a
	// lost answer.
	DropAfterForward
)

// Fault is what the proxy does to a request.
type Fault struct {
	Kind       Kind
	Status     int    // for Status
	RetryAfter string // for Status: the Retry-After header, if not empty
}

// Proxy forwards to one server. Its methods are safe for concurrent use.
type Proxy struct {
	ln     net.Listener
	target string

	mu sync.Mutex
	// next is the faults for the next requests, in order; then always.
	next   []Fault
	always Fault
	// match, if set, limits the faults to the requests it accepts; the
	// others pass.
	match func(*http.Request) bool

	requests  atomic.Int64
	faulted   atomic.Int64
	bytesDown atomic.Int64 // answer bodies forwarded from the server
	bytesUp   atomic.Int64 // request bodies forwarded to the server

	closed chan struct{}
	wg     sync.WaitGroup
	connMu sync.Mutex
	conns  map[net.Conn]bool
}

// New starts a proxy on 127.0.0.1 to target ("host:port").
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, closed: make(chan struct{}), conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's "127.0.0.1:port".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Always sets the fault for every request from now on (Fault{} passes
// them), and forgets faults set with Next.
func (p *Proxy) Always(f Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.always, p.next = f, nil
}

// Next makes the next n requests meet f; the ones after meet the fault set
// with Always.
func (p *Proxy) Next(n int, f Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for range n {
		p.next = append(p.next, f)
	}
}

// Match limits the faults to the requests match accepts (nil: all).
func (p *Proxy) Match(match func(*http.Request) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.match = match
}

// Requests, Faulted, BytesUp and BytesDown count what passed: requests
// read, requests that met a fault, and body bytes sent to and received
// from the server.
func (p *Proxy) Requests() int64  { return p.requests.Load() }
func (p *Proxy) Faulted() int64   { return p.faulted.Load() }
func (p *Proxy) BytesUp() int64   { return p.bytesUp.Load() }
func (p *Proxy) BytesDown() int64 { return p.bytesDown.Load() }

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() error {
	select {
	case <-p.closed:
		return nil
	default:
	}
	close(p.closed)
	err := p.ln.Close()
	p.connMu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.connMu.Unlock()
	p.wg.Wait()
	return err
}

func (p *Proxy) track(c net.Conn, on bool) {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	if on {
		p.conns[c] = true
	} else {
		delete(p.conns, c)
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.track(c, true)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.track(c, false)
			defer c.Close()
			p.serve(c)
		}()
	}
}

// fault picks the fault for req.
func (p *Proxy) fault(req *http.Request) Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.match != nil && !p.match(req) {
		return Fault{}
	}
	if len(p.next) > 0 {
		f := p.next[0]
		p.next = p.next[1:]
		return f
	}
	return p.always
}

// serve handles the requests of one client connection.
func (p *Proxy) serve(client net.Conn) {
	var upstream net.Conn
	var upReader *bufio.Reader
	defer func() {
		if upstream != nil {
			upstream.Close()
		}
	}()
	in := bufio.NewReader(client)
	for {
		req, err := http.ReadRequest(in)
		if err != nil {
			return
		}
		p.requests.Add(1)
		if strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
			// The proxy takes the body itself (to forward it, or to drain
			// it before a fault's answer), so it says go on, and the server
			// never sees the Expect.
			req.Header.Del("Expect")
			if _, err := io.WriteString(client, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
				return
			}
		}
		f := p.fault(req)
		if f.Kind != Pass {
			p.faulted.Add(1)
		}
		switch f.Kind {
		case Drop:
			return
		case Stall:
			io.Copy(io.Discard, req.Body)
			gone := make(chan struct{})
			go func() { io.Copy(io.Discard, in); close(gone) }()
			select {
			case <-p.closed:
			case <-gone: // the client gave up
			}
			return
		case Status:
			io.Copy(io.Discard, req.Body)
			resp := fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Length: 0\r\n", f.Status, http.StatusText(f.Status))
			if f.RetryAfter != "" {
				resp += "Retry-After: " + f.RetryAfter + "\r\n"
			}
			if _, err := io.WriteString(client, resp+"\r\n"); err != nil {
				return
			}
			continue
		}
		if upstream == nil {
			upstream, err = net.Dial("tcp", p.target)
			if err != nil {
				return
			}
			p.track(upstream, true)
			defer p.track(upstream, false)
			upReader = bufio.NewReader(upstream)
		}
		body := &countingReader{r: req.Body, n: &p.bytesUp}
		req.Body = io.NopCloser(body)
		if err := req.Write(upstream); err != nil {
			return
		}
		resp, err := http.ReadResponse(upReader, req)
		if err != nil {
			return
		}
		if f.Kind == DropAfterForward {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return
		}
		resp.Body = io.NopCloser(&countingReader{r: resp.Body, n: &p.bytesDown})
		if resp.ContentLength < 0 && resp.Header.Get("Content-Length") == "" && len(resp.TransferEncoding) == 0 && req.Method != http.MethodHead {
			// An answer that ends at the connection's close: no keep-alive.
			resp.Close = true
		}
		err = resp.Write(client)
		if err != nil || resp.Close || req.Close {
			return
		}
	}
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}
