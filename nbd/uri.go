package nbd

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// Address is where an NBD export is: a network ("tcp" or "unix"), an
// address on it, and the export's name.
type Address struct {
	Network string // "tcp" or "unix"
	Addr    string // host:port, or a socket's path
	Export  string // the export's name; "" is the server's default export
}

// DefaultPort is the NBD port an nbd:// URI without one means.
const DefaultPort = "10809"

// ParseURI parses the standard NBD URIs (doc/uri.md in the NBD project)
// diskpoint reads: nbd://HOST[:PORT]/EXPORT and
// nbd+unix:///EXPORT?socket=PATH. TLS (nbds://) is refused rather than
// silently read in the clear.
func ParseURI(s string) (Address, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Address{}, fmt.Errorf("NBD URI %q: %w", s, err)
	}
	export := strings.TrimPrefix(u.Path, "/")
	switch u.Scheme {
	case "nbd":
		if u.Host == "" {
			return Address{}, fmt.Errorf("NBD URI %q names no host", s)
		}
		if len(u.Query()) != 0 {
			return Address{}, fmt.Errorf("NBD URI %q: nbd:// takes no query", s)
		}
		host, port := u.Hostname(), u.Port()
		if port == "" {
			port = DefaultPort
		}
		return Address{Network: "tcp", Addr: net.JoinHostPort(host, port), Export: export}, nil
	case "nbd+unix":
		if u.Host != "" {
			return Address{}, fmt.Errorf("NBD URI %q: nbd+unix:// takes no host (nbd+unix:///EXPORT?socket=PATH)", s)
		}
		q := u.Query()
		sock := q.Get("socket")
		if sock == "" {
			return Address{}, fmt.Errorf("NBD URI %q names no socket (nbd+unix:///EXPORT?socket=PATH)", s)
		}
		for k := range q {
			if k != "socket" {
				return Address{}, fmt.Errorf("NBD URI %q: unknown query parameter %q", s, k)
			}
		}
		return Address{Network: "unix", Addr: sock, Export: export}, nil
	case "nbds", "nbds+unix":
		return Address{}, fmt.Errorf("NBD URI %q: TLS is not supported", s)
	}
	return Address{}, fmt.Errorf("NBD URI %q: scheme %q is not nbd or nbd+unix", s, u.Scheme)
}

// String is a in URI form. The socket's path is written as it is, for
// error messages that name it readably.
func (a Address) String() string {
	export := (&url.URL{Path: a.Export}).EscapedPath()
	if a.Network == "unix" {
		return "nbd+unix:///" + export + "?socket=" + a.Addr
	}
	return "nbd://" + a.Addr + "/" + export
}
