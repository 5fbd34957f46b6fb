package location

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Location
	}{
		{"/srv/repo", Location{Scheme: Local, Path: "/srv/repo"}},
		{"repo", Location{Scheme: Local, Path: "repo"}},
		{"./a:b", Location{Scheme: Local, Path: "./a:b"}},
		{"/x/s3:http:", Location{Scheme: Local, Path: "/x/s3:http:"}},
		{"local:/srv/repo", Location{Scheme: Local, Path: "/srv/repo"}},
		{"local:a:b", Location{Scheme: Local, Path: "a:b"}},
		{`local:C:\backups`, Location{Scheme: Local, Path: `C:\backups`}},
		{"s3:http://127.0.0.1:9000/bucket/pre/fix", Location{Scheme: S3, Endpoint: "127.0.0.1:9000", Insecure: true, Bucket: "bucket", Prefix: "pre/fix"}},
		{"s3:https://s3.example.com/bucket/p", Location{Scheme: S3, Endpoint: "s3.example.com", Bucket: "bucket", Prefix: "p"}},
		{"s3:s3.amazonaws.com/bucket/p/", Location{Scheme: S3, Endpoint: "s3.amazonaws.com", Bucket: "bucket", Prefix: "p"}},
		{"s3:s3.amazonaws.com/bucket", Location{Scheme: S3, Endpoint: "s3.amazonaws.com", Bucket: "bucket"}},
		{"s3:http://[::1]:9000/b", Location{Scheme: S3, Endpoint: "[::1]:9000", Insecure: true, Bucket: "b"}},
		{"azure:backups:/vm/one", Location{Scheme: Azure, Container: "backups", Prefix: "vm/one"}},
		{"azure:backups:/", Location{Scheme: Azure, Container: "backups"}},
		{"azure:backups", Location{Scheme: Azure, Container: "backups"}},
	} {
		got, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("Parse(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
		// The canonical form parses to the same location.
		again, err := Parse(got.String())
		if err != nil || again != got {
			t.Errorf("Parse(%q.String() = %q) = %+v, %v; want %+v", tc.in, got.String(), again, err, got)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct {
		in, says string
		unknown  bool
	}{
		{"", "empty", false},
		{"foo:bar", `unknown repository scheme "foo:"`, true},
		{"s3x:http://127.0.0.1/b", `unknown repository scheme "s3x:"`, true},
		{"sftp:host:/repo", `unknown repository scheme "sftp:"`, true},
		{`C:\backups`, "local:C:\\backups", true},
		{"local:", "names no directory", false},
		{"s3:", "names no server", false},
		{"s3:http://127.0.0.1:9000", "names no bucket", false},
		{"s3:http://127.0.0.1:9000/", "names no bucket", false},
		{"s3:ftp://host/b", "http:// or https://", false},
		{"s3:http://key:secret@127.0.0.1/b/p", "credentials do not belong", false},
		{"s3:http://127.0.0.1/b/p?x=1", "no query", false},
		{"s3:http://127.0.0.1/b/.hidden", "prefix", false},
		{"azure:", "names no container", false},
		{"azure::/p", "names no container", false},
		{"azure:c:/a//b", "prefix", false},
	} {
		_, err := Parse(tc.in)
		if err == nil {
			t.Errorf("Parse(%q) succeeded", tc.in)
			continue
		}
		if !strings.Contains(err.Error(), tc.says) {
			t.Errorf("Parse(%q): %v; want it to say %q", tc.in, err, tc.says)
		}
		if errors.Is(err, ErrUnknownScheme) != tc.unknown {
			t.Errorf("Parse(%q): %v; ErrUnknownScheme %v, want %v", tc.in, err, !tc.unknown, tc.unknown)
		}
	}
}

// Credentials come only from the environment; missing ones are an error
// that says what to set, before any request.
func TestNewStoreCredentials(t *testing.T) {
	env := func(vars map[string]string) Getenv {
		return func(name string) string { return vars[name] }
	}
	s3, _ := Parse("s3:http://127.0.0.1:1/b/p")
	az, _ := Parse("azure:c:/p")
	for _, tc := range []struct {
		loc  Location
		vars map[string]string
		says string // "" for success
	}{
		{s3, nil, "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"},
		{s3, map[string]string{"AWS_ACCESS_KEY_ID": "k"}, "go together"},
		{s3, map[string]string{"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}, ""},
		{s3, map[string]string{"AWS_SHARED_CREDENTIALS_FILE": writeFile(t, "[default]\naws_access_key_id = k\naws_secret_access_key = s\n")}, ""},
		{s3, map[string]string{"AWS_SHARED_CREDENTIALS_FILE": writeFile(t, "[other]\naws_access_key_id = k\n")}, "profile default"},
		{az, nil, "set AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY, or AZURE_STORAGE_CONNECTION_STRING"},
		{az, map[string]string{"AZURE_STORAGE_ACCOUNT": "a"}, "AZURE_STORAGE_KEY is not"},
		{az, map[string]string{"AZURE_STORAGE_ACCOUNT": "acct", "AZURE_STORAGE_KEY": "a2V5"}, ""},
		{az, map[string]string{"AZURE_STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:1/a;"}, ""},
	} {
		s, err := tc.loc.NewStore(env(tc.vars))
		if tc.says == "" {
			if err != nil {
				t.Errorf("%s with %v: %v", tc.loc, tc.vars, err)
			} else {
				s.Close()
			}
			continue
		}
		if err == nil || !errors.Is(err, ErrNoCredentials) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s with %v: %v; want ErrNoCredentials saying %q", tc.loc, tc.vars, err, tc.says)
		}
	}
}

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := t.TempDir() + "/credentials"
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
