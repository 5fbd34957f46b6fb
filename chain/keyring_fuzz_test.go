package chain

import (
	"bytes"
	"context"
	"testing"
)

// FuzzKeyObject: whatever bytes a key object holds, decoding them returns an
// error, or a key object whose parameters are in bounds and whose encoding
// is those very bytes (so that its seal covers every one of them).
func FuzzKeyObject(f *testing.F) {
	ctx := context.Background()
	store := NewMemStore()
	cred, err := PasswordCredential("pw")
	if err != nil {
		f.Fatal(err)
	}
	ring, err := InitKeyring(ctx, store, cred, KeyOptions{Label: "seed", Argon2: cheapArgon2})
	if err != nil {
		f.Fatal(err)
	}
	key, err := NewKey()
	if err != nil {
		f.Fatal(err)
	}
	keyCred, err := KeyCredential(key)
	if err != nil {
		f.Fatal(err)
	}
	if _, err := ring.AddKey(ctx, store, keyCred, KeyOptions{}); err != nil {
		f.Fatal(err)
	}
	if err := store.List(ctx, keysPrefix, func(info ObjectInfo) error {
		data, err := store.Get(ctx, info.Name)
		f.Add(data)
		return err
	}); err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(`{"version":2,"kdf":"argon2id","argon2id":{"time":4294967295,"memory_kib":4294967295,"threads":255}}`))
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := decodeKeyObject("keys/fuzz", data)
		if err != nil {
			return
		}
		if o.KDF == KDFArgon2id && o.Argon2.check() != nil || o.KDF != KDFArgon2id && o.KDF != KDFNone {
			t.Fatalf("accepted kdf %q with parameters %+v", o.KDF, o.Argon2)
		}
		if len(o.Salt) != keySaltSize || len(o.WrappedKey) != wrappedKeyLen && len(o.WrappedKey) != wrappedKeyWithIDLen {
			t.Fatalf("accepted salt of %d bytes, wrapped key of %d", len(o.Salt), len(o.WrappedKey))
		}
		again, err := o.encode()
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("accepted bytes that are not its encoding: %v", err)
		}
	})
}
