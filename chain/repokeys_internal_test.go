package chain

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

var cheapArgon2Internal = KeyOptions{Argon2: Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}}

func mustKeyCredential(t *testing.T) Credential {
	t.Helper()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	c, err := KeyCredential(key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newEncryptedV2(t *testing.T, store Store, cred Credential) *Repository {
	t.Helper()
	cfg, err := NewConfig(0)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Version, cfg.PackSize = FormatVersion2, 1<<20
	r, err := InitWithCredential(context.Background(), store, cfg, cred, cheapArgon2Internal)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Credentials are added, removed and changed through the repository; the
// blobs stay readable under the same IDs whichever credential opens it,
// and one removed or replaced no longer does.
func TestRepositoryKeyChanges(t *testing.T) {
	ctx := context.Background()
	store := NewMemStore()
	first := mustKeyCredential(t)
	repo := newEncryptedV2(t, store, first)
	data := bytes.Repeat([]byte("block "), 10000)
	id := repo.HashBlob(data)
	w, err := repo.NewWriter(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.PutBlob(ctx, DataBlob, id, data); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	w.Close()
	readsBack := func(r *Repository) {
		t.Helper()
		if r.HashBlob(data) != id {
			t.Fatal("the blob's ID changed with the credential")
		}
		got, err := r.ReadBlob(ctx, DataBlob, id, nil)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read the blob: %v", err)
		}
	}

	password, _ := PasswordCredential("a password")
	added, err := repo.AddKey(ctx, password, KeyOptions{Label: "ops", Argon2: cheapArgon2Internal.Argon2})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := repo.Keys(ctx)
	if err != nil || len(keys) != 2 || keys[1].ID != added || keys[1].Label != "ops" || keys[1].KDF != KDFArgon2id {
		t.Fatalf("keys after add: %+v, %v", keys, err)
	}
	byPassword, err := OpenWithCredential(ctx, store, password)
	if err != nil {
		t.Fatal(err)
	}
	if byPassword.UsedKey() != added {
		t.Fatalf("opened with key %s, want %s", byPassword.UsedKey(), added)
	}
	readsBack(byPassword)

	if err := repo.RemoveKey(ctx, repo.UsedKey()); !errors.Is(err, ErrKeyInUse) {
		t.Fatalf("remove the key in use: %v, want ErrKeyInUse", err)
	}
	if err := byPassword.RemoveKey(ctx, repo.UsedKey()); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenWithCredential(ctx, store, first); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("open with a removed key: %v, want ErrWrongKey", err)
	}

	// passwd: the password is replaced by a key; the password opens
	// nothing after, the new key does.
	second := mustKeyCredential(t)
	changed, err := byPassword.ChangeKey(ctx, second, KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if byPassword.UsedKey() != changed {
		t.Fatalf("after passwd the key in use is %s, want %s", byPassword.UsedKey(), changed)
	}
	if _, err := OpenWithCredential(ctx, store, password); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("open with the replaced password: %v, want ErrWrongKey", err)
	}
	bySecond, err := OpenWithCredential(ctx, store, second)
	if err != nil {
		t.Fatal(err)
	}
	readsBack(bySecond)
	if keys, _ := bySecond.Keys(ctx); len(keys) != 1 || keys[0].ID != changed {
		t.Fatalf("keys after passwd: %+v", keys)
	}

	// A repository without a key ring has none to change.
	plainCfg, _ := NewConfig(0)
	plain, err := Init(ctx, NewMemStore(), plainCfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.AddKey(ctx, second, KeyOptions{}); !errors.Is(err, ErrUnsupportedVersion) {
		t.Fatalf("add a key to a plain repository: %v", err)
	}
}

// A key change holds the repository's exclusive lock: it waits for nobody
// and is refused while another process writes or collects garbage, and a
// GC is refused while a key change holds it.
func TestRepositoryKeyChangesHoldTheExclusiveLock(t *testing.T) {
	ctx := context.Background()
	store := NewMemStore()
	cred := mustKeyCredential(t)
	repo := newEncryptedV2(t, store, cred)
	other, err := OpenWithCredential(ctx, store, cred)
	if err != nil {
		t.Fatal(err)
	}
	newCred := mustKeyCredential(t)
	for _, exclusive := range []bool{false, true} {
		l, err := other.lock(ctx, exclusive, "gc")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := repo.AddKey(ctx, newCred, KeyOptions{}); !errors.Is(err, ErrLocked) {
			t.Errorf("add a key while another process holds a lock (exclusive %v): %v, want ErrLocked", exclusive, err)
		}
		if _, err := repo.ChangeKey(ctx, newCred, KeyOptions{}); !errors.Is(err, ErrLocked) {
			t.Errorf("change the key while another process holds a lock (exclusive %v): %v, want ErrLocked", exclusive, err)
		}
		if err := repo.RemoveKey(ctx, "00000000000000000000000000000000"); !errors.Is(err, ErrLocked) {
			t.Errorf("remove a key while another process holds a lock (exclusive %v): %v, want ErrLocked", exclusive, err)
		}
		l.unlock()
	}
	if keys, _ := repo.Keys(ctx); len(keys) != 1 {
		t.Fatalf("refused key changes changed the key ring: %+v", keys)
	}
	// While a key change holds the lock, a GC in another process is
	// refused: the change runs inside the lock, seen from fn.
	err = repo.withKeyRing(ctx, "key add", func(ctx context.Context) error {
		if _, err := other.GC(ctx, GCOptions{}); !errors.Is(err, ErrLocked) {
			t.Errorf("GC during a key change: %v, want ErrLocked", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.GC(ctx, GCOptions{}); err != nil {
		t.Fatalf("GC after the key change: %v", err)
	}
}
