package chain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// cheapArgon2 keeps password tests fast: the parameters are stored in the
// key object, so unlocking uses them too.
var cheapArgon2 = Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}

func testKeyCredential(t *testing.T) Credential {
	t.Helper()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	cred, err := KeyCredential(key)
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

func testPassword(t *testing.T, password string) Credential {
	t.Helper()
	cred, err := PasswordCredential(password)
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

// sameMaster reports whether two key rings hold the same master key, by
// what the master key decides: blob IDs, and what one seals the other opens.
func sameMaster(t *testing.T, a, b *Keyring) bool {
	t.Helper()
	if a.keys.hash([]byte("block")) != b.keys.hash([]byte("block")) {
		return false
	}
	_, err := b.keys.openNamed("manifests/c/p", a.keys.sealNamed("manifests/c/p", []byte("x")))
	return err == nil
}

func TestKeyringUnlockWithKeyAndPassword(t *testing.T) {
	ctx := context.Background()
	store := NewMemStore()
	key := testKeyCredential(t)
	ring, err := InitKeyring(ctx, store, key, KeyOptions{Label: "first"})
	if err != nil {
		t.Fatal(err)
	}
	pwID, err := ring.AddKey(ctx, store, testPassword(t, "correct horse"), KeyOptions{Argon2: cheapArgon2})
	if err != nil {
		t.Fatal(err)
	}

	byKey, err := UnlockKeyring(ctx, store, key)
	if err != nil {
		t.Fatal(err)
	}
	if byKey.UsedKey() != ring.UsedKey() || !sameMaster(t, ring, byKey) {
		t.Fatalf("unlocked by key: used %s (want %s), same master %v", byKey.UsedKey(), ring.UsedKey(), sameMaster(t, ring, byKey))
	}
	byPassword, err := UnlockKeyring(ctx, store, testPassword(t, "correct horse"))
	if err != nil {
		t.Fatal(err)
	}
	if byPassword.UsedKey() != pwID || !sameMaster(t, ring, byPassword) {
		t.Fatalf("unlocked by password: used %s (want %s)", byPassword.UsedKey(), pwID)
	}

	for name, cred := range map[string]Credential{
		"wrong password": testPassword(t, "Correct horse"),
		"wrong key":      testKeyCredential(t),
	} {
		if _, err := UnlockKeyring(ctx, store, cred); !errors.Is(err, ErrWrongKey) {
			t.Errorf("%s: %v, want ErrWrongKey", name, err)
		}
	}
}

func TestKeyringPasswordKeyObjectRecordsItsParameters(t *testing.T) {
	ctx := context.Background()
	store := NewMemStore()
	params := Argon2Params{Time: 2, MemoryKiB: 128, Threads: 2}
	ring, err := InitKeyring(ctx, store, testPassword(t, "pw"), KeyOptions{Argon2: params})
	if err != nil {
		t.Fatal(err)
	}
	o, err := readKeyObject(ctx, store, keyObjectName(ring.UsedKey()))
	if err != nil {
		t.Fatal(err)
	}
	if o.KDF != KDFArgon2id || o.Argon2 == nil || *o.Argon2 != params {
		t.Fatalf("key object: kdf %s, parameters %+v, want argon2id %+v", o.KDF, o.Argon2, params)
	}
	if _, err := ring.AddKey(ctx, store, testPassword(t, "pw2"), KeyOptions{Argon2: Argon2Params{Time: 1, MemoryKiB: 2 << 20, Threads: 1}}); err == nil {
		t.Fatal("a key object asking for 2 GiB of memory was made")
	}
}

func TestKeyringInitRefusesExistingKeysAndUnlockNeedsOne(t *testing.T) {
	ctx := context.Background()
	store := NewMemStore()
	if _, err := UnlockKeyring(ctx, store, testKeyCredential(t)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unlock without key objects: %v, want ErrNotFound", err)
	}
	if _, err := InitKeyring(ctx, store, testKeyCredential(t), KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := InitKeyring(ctx, store, testKeyCredential(t), KeyOptions{}); !errors.Is(err, ErrExists) {
		t.Fatalf("second init: %v, want ErrExists", err)
	}
}

func TestKeyringRemoveRefusesKeyInUseAndLastKey(t *testing.T) {
	ctx := context.Background()
	store := NewMemStore()
	ring, err := InitKeyring(ctx, store, testKeyCredential(t), KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ring.RemoveKey(ctx, store, ring.UsedKey()); !errors.Is(err, ErrKeyInUse) {
		t.Fatalf("removing the key in use: %v, want ErrKeyInUse", err)
	}
	second := testKeyCredential(t)
	secondID, err := ring.AddKey(ctx, store, second, KeyOptions{Label: "second"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ring.RemoveKey(ctx, store, strings.Repeat("0", 32)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removing a missing key: %v, want ErrNotFound", err)
	}
	if err := ring.RemoveKey(ctx, store, "../config"); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("removing a key by a bad ID: %v, want ErrInvalidName", err)
	}

	// The key in use was damaged meanwhile (or removed by another
	// process): the second key is then the only one that still works.
	usedName := keyObjectName(ring.UsedKey())
	data, err := store.Get(ctx, usedName)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Put(ctx, usedName, data[:len(data)/2]); err != nil {
		t.Fatal(err)
	}
	if err := ring.RemoveKey(ctx, store, secondID); !errors.Is(err, ErrLastKey) {
		t.Fatalf("removing the last working key: %v, want ErrLastKey", err)
	}
	if _, err := UnlockKeyring(ctx, store, second); err != nil {
		t.Fatalf("the refused removal left the key unusable: %v", err)
	}

	if err := store.Put(ctx, usedName, data); err != nil {
		t.Fatal(err)
	}
	if err := ring.RemoveKey(ctx, store, secondID); err != nil {
		t.Fatal(err)
	}
	if _, err := UnlockKeyring(ctx, store, second); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("unlock with a removed key: %v, want ErrWrongKey", err)
	}
}

func TestKeyringListKeys(t *testing.T) {
	ctx := context.Background()
	store := NewMemStore()
	ring, err := InitKeyring(ctx, store, testKeyCredential(t), KeyOptions{Label: "backup server", Host: "h1"})
	if err != nil {
		t.Fatal(err)
	}
	pwID, err := ring.AddKey(ctx, store, testPassword(t, "pw"), KeyOptions{Label: "laptop", Argon2: cheapArgon2})
	if err != nil {
		t.Fatal(err)
	}
	// Not a key object's name: not listed, not tried, not removed.
	if err := store.Put(ctx, keysPrefix+"README", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	damagedID := strings.Repeat("ab", keyObjectIDSize)
	if err := store.Put(ctx, keyObjectName(damagedID), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	infos, err := ListKeys(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]KeyInfo{}
	for _, info := range infos {
		got[info.ID] = info
	}
	if len(infos) != 3 || len(got) != 3 {
		t.Fatalf("listed %+v, want 3 keys", infos)
	}
	if k := got[ring.UsedKey()]; k.KDF != KDFNone || k.Label != "backup server" || k.Host != "h1" || k.Err != nil || k.Created.IsZero() {
		t.Errorf("first key listed as %+v", k)
	}
	if k := got[pwID]; k.KDF != KDFArgon2id || k.Label != "laptop" || k.Err != nil {
		t.Errorf("password key listed as %+v", k)
	}
	if k := got[damagedID]; !errors.Is(k.Err, ErrCorrupt) && !errors.Is(k.Err, ErrUnsupportedVersion) {
		t.Errorf("damaged key listed as %+v, want an error", k)
	}
	// A damaged key object does not keep a good one from opening.
	if _, err := UnlockKeyring(ctx, store, testPassword(t, "pw")); err != nil {
		t.Fatal(err)
	}
	_, err = UnlockKeyring(ctx, store, testPassword(t, "nope"))
	if !errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), damagedID) {
		t.Fatalf("wrong password with a damaged key object: %v, want ErrWrongKey naming %s", err, damagedID)
	}
}

// failingStore fails the operations tests choose, to stand for a crash at
// that point.
type failingStore struct {
	Store
	failDelete bool
	failPut    bool
}

var errInjected = errors.New("injected failure")

func (s *failingStore) Delete(ctx context.Context, name string) error {
	if s.failDelete {
		return fmt.Errorf("delete %s: %w", name, errInjected)
	}
	return s.Store.Delete(ctx, name)
}

func (s *failingStore) PutIfAbsent(ctx context.Context, name string, data []byte) error {
	if s.failPut {
		return fmt.Errorf("put %s: %w", name, errInjected)
	}
	return s.Store.PutIfAbsent(ctx, name, data)
}

func TestKeyringChangeKey(t *testing.T) {
	ctx := context.Background()
	store := NewMemStore()
	old := testPassword(t, "old")
	ring, err := InitKeyring(ctx, store, old, KeyOptions{Argon2: cheapArgon2})
	if err != nil {
		t.Fatal(err)
	}
	oldID := ring.UsedKey()
	newID, err := ring.ChangeKey(ctx, store, testPassword(t, "new"), KeyOptions{Argon2: cheapArgon2})
	if err != nil {
		t.Fatal(err)
	}
	if ring.UsedKey() != newID || newID == oldID {
		t.Fatalf("after a change the ring uses %s, want the new key %s", ring.UsedKey(), newID)
	}
	if _, err := UnlockKeyring(ctx, store, old); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("old password after a change: %v, want ErrWrongKey", err)
	}
	again, err := UnlockKeyring(ctx, store, testPassword(t, "new"))
	if err != nil {
		t.Fatal(err)
	}
	// The master key did not change, so neither did any blob ID.
	if !sameMaster(t, ring, again) {
		t.Fatal("changing a password changed the master key")
	}
	if infos, err := ListKeys(ctx, store); err != nil || len(infos) != 1 || infos[0].ID != newID {
		t.Fatalf("keys after a change: %+v, %v", infos, err)
	}
}

// A passwd that stops between adding the new key and removing the old one
// (here the delete fails, as a crash there would leave it) leaves both keys
// working; one that stops before the new key is written leaves the old.
func TestKeyringChangeKeyInterruptedLeavesAWorkingKey(t *testing.T) {
	ctx := context.Background()
	t.Run("between add and remove", func(t *testing.T) {
		store := &failingStore{Store: NewMemStore()}
		old := testPassword(t, "old")
		ring, err := InitKeyring(ctx, store, old, KeyOptions{Argon2: cheapArgon2})
		if err != nil {
			t.Fatal(err)
		}
		oldID := ring.UsedKey()
		store.failDelete = true
		newID, err := ring.ChangeKey(ctx, store, testPassword(t, "new"), KeyOptions{Argon2: cheapArgon2})
		if !errors.Is(err, errInjected) || newID == "" || !strings.Contains(err.Error(), oldID) {
			t.Fatalf("change with a failing delete: ID %q, %v", newID, err)
		}
		for _, pw := range []string{"new", "old"} {
			got, err := UnlockKeyring(ctx, store, testPassword(t, pw))
			if err != nil {
				t.Fatalf("unlock with the %s password: %v", pw, err)
			}
			if !sameMaster(t, ring, got) {
				t.Fatalf("the %s password opens another master key", pw)
			}
		}
		// Once the store works again, the old key can go: the ring uses
		// the new one.
		store.failDelete = false
		if err := ring.RemoveKey(ctx, store, oldID); err != nil {
			t.Fatal(err)
		}
		if _, err := UnlockKeyring(ctx, store, testPassword(t, "new")); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("before the new key is written", func(t *testing.T) {
		store := &failingStore{Store: NewMemStore()}
		ring, err := InitKeyring(ctx, store, testPassword(t, "old"), KeyOptions{Argon2: cheapArgon2})
		if err != nil {
			t.Fatal(err)
		}
		oldID := ring.UsedKey()
		store.failPut = true
		if _, err := ring.ChangeKey(ctx, store, testPassword(t, "new"), KeyOptions{Argon2: cheapArgon2}); !errors.Is(err, errInjected) {
			t.Fatalf("change with a failing put: %v", err)
		}
		if ring.UsedKey() != oldID {
			t.Fatalf("a failed change left the ring using %s", ring.UsedKey())
		}
		if _, err := UnlockKeyring(ctx, store, testPassword(t, "old")); err != nil {
			t.Fatal(err)
		}
	})
}

// Every byte of a key object is covered: changing any one makes it fail to
// decode or fail to open, never open to something.
func TestKeyringTamperedKeyObjectDoesNotOpen(t *testing.T) {
	ctx := context.Background()
	for _, cred := range []Credential{testKeyCredential(t), testPassword(t, "pw")} {
		t.Run(cred.describe(), func(t *testing.T) {
			store := NewMemStore()
			ring, err := InitKeyring(ctx, store, cred, KeyOptions{Label: "label", Argon2: cheapArgon2})
			if err != nil {
				t.Fatal(err)
			}
			name := keyObjectName(ring.UsedKey())
			good, err := store.Get(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			for i := range good {
				for _, flip := range []byte{0x01, 0x20, 0x80} {
					bad := bytes.Clone(good)
					bad[i] ^= flip
					if err := store.Put(ctx, name, bad); err != nil {
						t.Fatal(err)
					}
					if _, err := UnlockKeyring(ctx, store, cred); !errors.Is(err, ErrWrongKey) {
						t.Fatalf("byte %d ^ %#x (%q): unlock gave %v, want ErrWrongKey", i, flip, good[i], err)
					}
				}
			}
			// A wrapped key moved to another name does not open either.
			if err := store.Put(ctx, keyObjectName(strings.Repeat("cd", keyObjectIDSize)), good); err != nil {
				t.Fatal(err)
			}
			if err := store.Delete(ctx, name); err != nil {
				t.Fatal(err)
			}
			if _, err := UnlockKeyring(ctx, store, cred); !errors.Is(err, ErrWrongKey) {
				t.Fatalf("key object under another name: %v, want ErrWrongKey", err)
			}
		})
	}
}

// A repository converted from an encrypted version 1 repository keeps the
// version 1 ID key, so its blobs keep their names.
func TestKeyringKeepsAVersion1IDKey(t *testing.T) {
	ctx := context.Background()
	v1Key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	v1, err := deriveKeys(v1Key)
	if err != nil {
		t.Fatal(err)
	}
	store := NewMemStore()
	cred := testKeyCredential(t)
	if _, err := initKeyring(ctx, store, cred, KeyOptions{}, v1.id[:]); err != nil {
		t.Fatal(err)
	}
	ring, err := UnlockKeyring(ctx, store, cred)
	if err != nil {
		t.Fatal(err)
	}
	block := []byte("a block of a disk")
	if ring.keys.hash(block) != v1.hash(block) {
		t.Fatal("the converted repository names blobs differently from version 1")
	}
	plain, err := InitKeyring(ctx, NewMemStore(), cred, KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if plain.keys.hash(block) == v1.hash(block) {
		t.Fatal("a new repository's ID key is the version 1 key's")
	}
}

// A key object of a later version is reported as such, even with members
// this build does not know; an unknown member in this version is damage.
func TestKeyObjectVersions(t *testing.T) {
	newer := []byte(`{"version":3,"kdf":"scrypt","n":32768}`)
	if _, err := decodeKeyObject("keys/x", newer); !errors.Is(err, ErrUnsupportedVersion) {
		t.Errorf("a version 3 key object: %v, want ErrUnsupportedVersion", err)
	}
	extra := []byte(`{"version":2,"kdf":"none","n":32768}`)
	if _, err := decodeKeyObject("keys/x", extra); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a version 2 key object with an unknown member: %v, want ErrCorrupt", err)
	}
}

// The zero Credential is no credential, not an empty password.
func TestKeyringUnlockRefusesNoCredential(t *testing.T) {
	ctx := context.Background()
	store := NewMemStore()
	if _, err := InitKeyring(ctx, store, testPassword(t, "pw"), KeyOptions{Argon2: cheapArgon2}); err != nil {
		t.Fatal(err)
	}
	if _, err := UnlockKeyring(ctx, store, Credential{}); err == nil || errors.Is(err, ErrWrongKey) {
		t.Errorf("unlock with no credential: %v, want a refusal", err)
	}
	if _, err := InitKeyring(ctx, NewMemStore(), Credential{}, KeyOptions{}); err == nil {
		t.Error("made a key object for no credential")
	}
}

func TestCredentialsRefuseBadInput(t *testing.T) {
	for _, n := range []int{0, KeySize - 1, KeySize + 1} {
		if _, err := KeyCredential(make([]byte, n)); err == nil {
			t.Errorf("a key of %d bytes was taken", n)
		}
	}
	if _, err := PasswordCredential(""); err == nil {
		t.Error("an empty password was taken")
	}
	key := make([]byte, KeySize)
	cred, err := KeyCredential(key)
	if err != nil {
		t.Fatal(err)
	}
	key[0] = 1 // the caller's buffer may be reused or cleared
	if cred.key[0] != 0 {
		t.Error("the credential shares the caller's key buffer")
	}
	if _, err := newKeyObject(cred, KeyOptions{Label: "tab\there"}); err == nil {
		t.Error("a label with a control character was taken")
	}
}
