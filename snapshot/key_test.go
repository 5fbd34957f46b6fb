package snapshot

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
)

// OpenFromEnvironment names the key variables only when a key is what is
// missing: any other failure to open (no repository, a store error) must
// not send the user looking for a key.
func TestOpenFromEnvironmentHintsAtTheKeyOnlyForKeyErrors(t *testing.T) {
	ctx := context.Background()
	t.Setenv(KeyEnv, "")
	t.Setenv(KeyFileEnv, "")
	key, err := chain.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	encrypted := t.TempDir()
	if _, err := Init(ctx, encrypted, InitOptions{Key: key}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		dir      string
		wantErr  error
		wantHint bool
	}{
		{"encrypted, no key", encrypted, ErrKeyRequired, true},
		{"not a repository", t.TempDir(), chain.ErrNotFound, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := OpenFromEnvironment(ctx, tc.dir)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("open: %v, want %v", err, tc.wantErr)
			}
			if hint := strings.Contains(err.Error(), KeyEnv); hint != tc.wantHint {
				t.Fatalf("open: %q: names %s = %v, want %v", err, KeyEnv, hint, tc.wantHint)
			}
		})
	}
}
