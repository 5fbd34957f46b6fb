package chain_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
)

// cheapArgon2 keeps password tests fast; the parameters are stored in the
// key object, so they are what unlocking uses.
var cheapArgon2 = chain.KeyOptions{Argon2: chain.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}}

func newEncryptedV2Config(t *testing.T) chain.Config {
	t.Helper()
	cfg, err := chain.NewConfig(0)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Version = chain.FormatVersion2
	cfg.TreeFanout = 4
	cfg.PackSize = 1 << 20
	return cfg
}

func keyCred(t *testing.T, key []byte) chain.Credential {
	t.Helper()
	c, err := chain.KeyCredential(key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func passwordCred(t *testing.T, password string) chain.Credential {
	t.Helper()
	c, err := chain.PasswordCredential(password)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// An encrypted version 2 repository made with a key or a password: a key
// ring of one key object, a config with a MAC; Open unlocks it with the
// credential, refuses another (ErrWrongKey) or none (ErrKeyRequired).
func TestEncryptedVersion2InitOpen(t *testing.T) {
	ctx := context.Background()
	key, _ := chain.NewKey()
	for _, tc := range []struct {
		name  string
		cred  chain.Credential
		wrong chain.Credential
		kdf   string
	}{
		{"key", keyCred(t, key), keyCred(t, make([]byte, chain.KeySize)), chain.KDFNone},
		{"password", passwordCred(t, "correct horse"), passwordCred(t, "battery staple"), chain.KDFArgon2id},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := chain.NewMemStore()
			repo, err := chain.InitWithCredential(ctx, store, newEncryptedV2Config(t), tc.cred, cheapArgon2)
			if err != nil {
				t.Fatal(err)
			}
			if !repo.Encrypted() || repo.Config().Version != chain.FormatVersion2 || repo.Config().Encryption != "xchacha20-poly1305" {
				t.Fatalf("config %+v", repo.Config())
			}
			keys, err := chain.ListKeys(ctx, store)
			if err != nil || len(keys) != 1 || keys[0].KDF != tc.kdf {
				t.Fatalf("key ring: %+v, %v", keys, err)
			}
			cfg, _ := store.Get(ctx, "config")
			if !bytes.Contains(cfg, []byte(`"mac": "`)) {
				t.Fatalf("config has no mac:\n%s", cfg)
			}
			probe := []byte("a block")
			id := repo.HashBlob(probe)
			if id == chain.Hash(probe) {
				t.Fatal("blob IDs are not keyed")
			}

			reopened, err := chain.OpenWithCredential(ctx, store, tc.cred)
			if err != nil {
				t.Fatal(err)
			}
			if reopened.HashBlob(probe) != id {
				t.Fatal("reopened, the repository names blobs differently")
			}
			if _, err := chain.OpenWithCredential(ctx, store, tc.wrong); !errors.Is(err, chain.ErrWrongKey) {
				t.Errorf("open with another credential: %v, want ErrWrongKey", err)
			}
			if _, err := chain.Open(ctx, store, nil); !errors.Is(err, chain.ErrKeyRequired) {
				t.Errorf("open without a credential: %v, want ErrKeyRequired", err)
			}
			if _, err := chain.Init(ctx, store, newEncryptedV2Config(t), key); !errors.Is(err, chain.ErrExists) {
				t.Errorf("init again: %v, want ErrExists", err)
			}
		})
	}
	// A key opens through Open too, as for version 1.
	store := chain.NewMemStore()
	if _, err := chain.Init(ctx, store, newEncryptedV2Config(t), key); err != nil {
		t.Fatal(err)
	}
	if _, err := chain.Open(ctx, store, key); err != nil {
		t.Fatal(err)
	}
	// A password is no credential for a version 1 repository.
	v1 := chain.NewMemStore()
	cfg1, _ := chain.NewConfig(0)
	if _, err := chain.Init(ctx, v1, cfg1, key); err != nil {
		t.Fatal(err)
	}
	if _, err := chain.OpenWithCredential(ctx, v1, passwordCred(t, "pw")); !errors.Is(err, chain.ErrWrongKey) {
		t.Errorf("open version 1 with a password: %v, want ErrWrongKey", err)
	}
	if _, err := chain.InitWithCredential(ctx, chain.NewMemStore(), cfg1, passwordCred(t, "pw"), cheapArgon2); !errors.Is(err, chain.ErrUnsupportedVersion) {
		t.Errorf("init version 1 with a password: %v, want ErrUnsupportedVersion", err)
	}
}

// A config changed by someone without the key (any member: one that says
// how to read the repository, or one added) is ErrCorrupt naming the config.
func TestEncryptedVersion2ConfigMAC(t *testing.T) {
	ctx := context.Background()
	key, _ := chain.NewKey()
	for _, change := range []struct{ old, new string }{
		{`"pack_size": 1048576`, `"pack_size": 2097152`},
		{`"tree_fanout": 4`, `"tree_fanout": 8`},
		{`"version": 2`, `"version": 2, "extra": 1`},
	} {
		store := chain.NewMemStore()
		if _, err := chain.Init(ctx, store, newEncryptedV2Config(t), key); err != nil {
			t.Fatal(err)
		}
		data, _ := store.Get(ctx, "config")
		if !strings.Contains(string(data), change.old) {
			t.Fatalf("%q not in %s", change.old, data)
		}
		store.Put(ctx, "config", []byte(strings.Replace(string(data), change.old, change.new, 1)))
		_, err := chain.Open(ctx, store, key)
		var ce *chain.CorruptError
		if !errors.As(err, &ce) || ce.Object != "config" {
			t.Errorf("config changed %s -> %s: open says %v, want ErrCorrupt naming config", change.old, change.new, err)
		}
	}
}

// An encrypted version 2 repository whose key objects are all gone is
// damage naming keys/, not a missing repository nor a wrong key.
func TestEncryptedVersion2WithoutKeyObjects(t *testing.T) {
	ctx := context.Background()
	key, _ := chain.NewKey()
	store := chain.NewMemStore()
	if _, err := chain.Init(ctx, store, newEncryptedV2Config(t), key); err != nil {
		t.Fatal(err)
	}
	store.List(ctx, "keys/", func(info chain.ObjectInfo) error { return store.Delete(ctx, info.Name) })
	_, err := chain.Open(ctx, store, key)
	var ce *chain.CorruptError
	if !errors.As(err, &ce) || ce.Object != "keys/" || errors.Is(err, chain.ErrNotFound) {
		t.Fatalf("open without key objects: %v, want ErrCorrupt naming keys/", err)
	}
}
