package chain

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

func testSubkeys2(t *testing.T) *subkeys2 {
	t.Helper()
	master, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := deriveSubkeys2(master, nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// The subkeys are part of the format: a repository written today must open
// with tomorrow's build. These values pin the derive_key contexts and the
// sealing's associated data; a change that moves them breaks every
// existing repository.
func TestSubkeys2KnownAnswers(t *testing.T) {
	master := make([]byte, masterKeySize)
	for i := range master {
		master[i] = byte(i)
	}
	k, err := deriveSubkeys2(master, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := k.hash([]byte("abc"))
	if got, want := id.String(), "b34c8921aaf706c1bc37374ffd268133555b93c9e5933b2e098a123f000ad042"; got != want {
		t.Errorf("keyed ID of abc: %s, want %s", got, want)
	}
	// A blob sealed when the format was fixed (its nonce included) must
	// still open.
	sealed, _ := hex.DecodeString("2fdd1e866207cda765fedc451e51e8dc3c30033e5e50b304096202f7a43a1b489cd13e7e29ff2cfde9f95770c985")
	if got, err := k.openBlob(nil, id, sealed); err != nil || string(got) != "a blob" {
		t.Errorf("a blob sealed by this format opens to %q, %v", got, err)
	}
}

func TestSeal2RoundTripsAndBindsWhatItSeals(t *testing.T) {
	k := testSubkeys2(t)
	other := testSubkeys2(t)
	plain := []byte("the stored bytes of a blob, or a header, or a lock")
	id := Hash([]byte("id"))

	type sealed struct {
		name  string
		bytes []byte
		open  func(k *subkeys2, b []byte) ([]byte, error)
	}
	cases := []sealed{
		{"blob", k.sealBlob(nil, id, plain), func(k *subkeys2, b []byte) ([]byte, error) { return k.openBlob(nil, id, b) }},
		{"pack header", k.sealPackHeader(nil, plain, 1000), func(k *subkeys2, b []byte) ([]byte, error) { return k.openPackHeader("pack p", b, 1000) }},
		{"lock", k.sealLock("locks/a", plain), func(k *subkeys2, b []byte) ([]byte, error) { return k.openLock("locks/a", b) }},
		{"named", k.sealNamed("manifests/c/p", plain), func(k *subkeys2, b []byte) ([]byte, error) { return k.openNamed("manifests/c/p", b) }},
	}
	for _, c := range cases {
		if len(c.bytes) != len(plain)+sealOverhead2 {
			t.Errorf("%s: sealed %d bytes into %d, want %d more", c.name, len(plain), len(c.bytes), sealOverhead2)
		}
		got, err := c.open(k, c.bytes)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("%s: opened to %q, %v", c.name, got, err)
		}
		if _, err := c.open(other, c.bytes); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: opened under another master key: %v", c.name, err)
		}
		for i := range c.bytes {
			bad := bytes.Clone(c.bytes)
			bad[i] ^= 0x01
			if _, err := c.open(k, bad); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%s: byte %d changed, open gave %v, want ErrCorrupt", c.name, i, err)
			}
		}
		if _, err := c.open(k, c.bytes[:sealOverhead2-1]); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: a truncated seal: %v", c.name, err)
		}
	}

	// Sealed as one thing, it does not open as another.
	blob := cases[0].bytes
	for _, wrong := range []func() ([]byte, error){
		func() ([]byte, error) { return k.openBlob(nil, Hash([]byte("other")), blob) },
		func() ([]byte, error) { return k.openPackHeader("pack p", cases[1].bytes, 1001) },
		func() ([]byte, error) { return k.openLock("locks/b", cases[2].bytes) },
		func() ([]byte, error) { return k.openNamed("manifests/c/q", cases[3].bytes) },
		func() ([]byte, error) { return k.openNamed("locks/a", cases[2].bytes) },
		func() ([]byte, error) { return k.openLock("manifests/c/p", cases[3].bytes) },
		// The data and metadata keys differ: the same associated data
		// under the other key does not open.
		func() ([]byte, error) { return open2(k.metadata, nil, blob, sealAD(sealKindBlob, id[:])) },
	} {
		if _, err := wrong(); err == nil {
			t.Error("sealed bytes opened as something else")
		}
	}

	// Random nonces: the same plaintext seals differently each time.
	if bytes.Equal(k.sealBlob(nil, id, plain), k.sealBlob(nil, id, plain)) {
		t.Error("two seals of one blob are equal")
	}
}

func TestSubkeys2AreIndependent(t *testing.T) {
	k := testSubkeys2(t)
	if k.id == k.configMAC {
		t.Fatal("the ID key is the config MAC key")
	}
	plain := []byte("x")
	if _, err := open2(k.data, nil, seal2(k.metadata, nil, plain, nil), nil); err == nil {
		t.Fatal("the data key opens what the metadata key sealed")
	}
}

// BenchmarkSealBlob compares sealing a 64 KiB blob (the default block
// size) in version 1 (AES-256-GCM) and version 2 (XChaCha20-Poly1305);
// FORMAT.md quotes the figures.
func BenchmarkSealBlob(b *testing.B) {
	master, err := NewKey()
	if err != nil {
		b.Fatal(err)
	}
	v1, err := deriveKeys(master)
	if err != nil {
		b.Fatal(err)
	}
	v2, err := deriveSubkeys2(master, nil)
	if err != nil {
		b.Fatal(err)
	}
	blob := testPlaintext(DefaultBlockSize)
	id := v2.hash(blob)
	dst := make([]byte, 0, len(blob)+sealOverhead2)
	b.Run("v1-aes-256-gcm/seal", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		for b.Loop() {
			v1.seal(dst[:0], blob, id[:])
		}
	})
	b.Run("v2-xchacha20-poly1305/seal", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		for b.Loop() {
			v2.sealBlob(dst[:0], id, blob)
		}
	})
	sealed1 := v1.seal(nil, blob, id[:])
	sealed2 := v2.sealBlob(nil, id, blob)
	out := make([]byte, 0, len(blob))
	b.Run("v1-aes-256-gcm/open", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		for b.Loop() {
			if _, err := v1.open(out[:0], sealed1, id[:]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("v2-xchacha20-poly1305/open", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		for b.Loop() {
			if _, err := v2.openBlob(out[:0], id, sealed2); err != nil {
				b.Fatal(err)
			}
		}
	})
}
