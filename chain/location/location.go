package location

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/diskpoint/diskpoint/chain/internal/objhttp"
)

// Scheme says which kind of store a [Location] names.
type Scheme string

// The schemes a location may name.
const (
	Local Scheme = "local"
	S3    Scheme = "s3"
	Azure Scheme = "azure"
)

// Location is a parsed repository location. Only the fields of its Scheme
// are set.
type Location struct {
	Scheme Scheme
	// Path is the directory of a Local repository.
	Path string
	// Endpoint is the S3 server's host[:port]; Insecure says it is spoken
	// to over plain HTTP (s3:http://...).
	Endpoint string
	Insecure bool
	// Bucket is the S3 bucket, Container the Azure Blob container.
	Bucket    string
	Container string
	// Prefix is the "folder" in the bucket or container that holds the
	// repository, without leading or trailing slashes; "" for the whole.
	Prefix string
}

// ErrUnknownScheme is in the error of a location whose scheme this package
// does not know.
var ErrUnknownScheme = errors.New("unknown repository scheme")

// Parse reads a repository location (see the package doc for its forms).
func Parse(s string) (Location, error) {
	if s == "" {
		return Location{}, errors.New("repository location is empty")
	}
	scheme, rest, ok := splitScheme(s)
	if !ok {
		return Location{Scheme: Local, Path: s}, nil
	}
	var loc Location
	var err error
	switch Scheme(scheme) {
	case Local:
		if rest == "" {
			err = errors.New("local: names no directory")
		}
		loc = Location{Scheme: Local, Path: rest}
	case S3:
		loc, err = parseS3(rest)
	case Azure:
		loc, err = parseAzure(rest)
	default:
		return Location{}, fmt.Errorf("repository %q: %w %q: use s3:, azure:, local: or a plain path (a directory whose name has a colon: local:%s or ./%s)",
			s, ErrUnknownScheme, scheme+":", s, s)
	}
	if err != nil {
		return Location{}, fmt.Errorf("repository %q: %w", s, err)
	}
	return loc, nil
}

// splitScheme splits "scheme:rest". A colon after a slash, or none, means
// there is no scheme: the value is a path.
func splitScheme(s string) (scheme, rest string, ok bool) {
	i := strings.IndexAny(s, ":/")
	if i <= 0 || s[i] != ':' {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}

// parseS3 reads what follows "s3:": [http[s]://]HOST[:PORT]/BUCKET[/PREFIX].
func parseS3(rest string) (Location, error) {
	loc := Location{Scheme: S3}
	raw := rest
	switch {
	case strings.HasPrefix(rest, "http://"):
		loc.Insecure = true
	case strings.HasPrefix(rest, "https://"):
	case strings.Contains(rest, "://"):
		return Location{}, fmt.Errorf("s3: speaks http:// or https://, not %s", rest[:strings.Index(rest, "://")+3])
	default:
		raw = "https://" + rest
	}
	u, err := url.Parse(raw)
	if err != nil {
		return Location{}, fmt.Errorf("s3: %w", err)
	}
	if u.User != nil {
		return Location{}, errors.New("s3: credentials do not belong in the location (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
	}
	if u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(raw, "?") {
		return Location{}, errors.New("s3: a location has no query or fragment")
	}
	if u.Host == "" {
		return Location{}, errors.New("s3: names no server (s3:HOST/BUCKET/PREFIX)")
	}
	loc.Endpoint = u.Host
	bucket, prefix, _ := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	if bucket == "" {
		return Location{}, errors.New("s3: names no bucket (s3:HOST/BUCKET/PREFIX)")
	}
	loc.Bucket = bucket
	if loc.Prefix, err = checkPrefix(prefix); err != nil {
		return Location{}, fmt.Errorf("s3: %w", err)
	}
	return loc, nil
}

// parseAzure reads what follows "azure:": CONTAINER[:[/PREFIX]].
func parseAzure(rest string) (Location, error) {
	container, prefix, _ := strings.Cut(rest, ":")
	if container == "" || strings.Contains(container, "/") {
		return Location{}, errors.New("azure: names no container (azure:CONTAINER:/PREFIX)")
	}
	p, err := checkPrefix(prefix)
	if err != nil {
		return Location{}, fmt.Errorf("azure: %w", err)
	}
	return Location{Scheme: Azure, Container: container, Prefix: p}, nil
}

// checkPrefix trims a prefix's slashes and checks that it is a valid
// object name, as the stores will (with the check they make).
func checkPrefix(prefix string) (string, error) {
	p, err := objhttp.Prefix(prefix)
	return strings.TrimSuffix(p, "/"), err
}

// String writes the location back in its canonical form: a local one as
// its path, s3:http[s]://HOST/BUCKET[/PREFIX], azure:CONTAINER:/PREFIX.
func (l Location) String() string {
	switch l.Scheme {
	case Local:
		if _, _, ok := splitScheme(l.Path); ok {
			return "local:" + l.Path
		}
		return l.Path
	case S3:
		scheme := "https://"
		if l.Insecure {
			scheme = "http://"
		}
		s := "s3:" + scheme + l.Endpoint + "/" + l.Bucket
		if l.Prefix != "" {
			s += "/" + l.Prefix
		}
		return s
	case Azure:
		return "azure:" + l.Container + ":/" + l.Prefix
	}
	return string(l.Scheme) + ":?"
}

// IsLocal reports whether the location is a local directory.
func (l Location) IsLocal() bool { return l.Scheme == Local }
