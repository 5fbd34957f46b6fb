package chain

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"testing"
)

func testV2Config(t *testing.T) []byte {
	t.Helper()
	c, err := NewConfig(0)
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestConfigMACKnownAnswer(t *testing.T) {
	master := make([]byte, masterKeySize)
	for i := range master {
		master[i] = byte(i)
	}
	k, err := deriveSubkeys2(master, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := hex.EncodeToString(k.configMACOf([]byte("{}"))), "d7480bd7b20e8f46dc57648a679d06420896827704c0138e4f28a023dd29787a"; got != want {
		t.Errorf("config MAC of {}: %s, want %s", got, want)
	}
}

func TestConfigMACVerifiesAndIgnoresOnlyWhiteSpace(t *testing.T) {
	k := testSubkeys2(t)
	stored, err := k.signConfig(testV2Config(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := k.verifyConfig(stored); err != nil {
		t.Fatal(err)
	}
	var c Config
	if err := json.Unmarshal(stored, &c); err != nil || c.BlockSize != DefaultBlockSize {
		t.Fatalf("the signed config decodes to %+v, %v", c, err)
	}
	if _, err := k.signConfig(stored); err == nil {
		t.Error("signed a config that has a mac already")
	}

	// White space means nothing and is not covered.
	var compact bytes.Buffer
	if err := json.Compact(&compact, stored); err != nil {
		t.Fatal(err)
	}
	if err := k.verifyConfig(compact.Bytes()); err != nil {
		t.Fatalf("the same config without white space: %v", err)
	}

	// Every other change is detected, naming the config.
	for i := range stored {
		for _, flip := range []byte{0x01, 0x20} {
			bad := bytes.Clone(stored)
			bad[i] ^= flip
			err := k.verifyConfig(bad)
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.Object != configName {
				t.Fatalf("byte %d (%q) ^ %#x: %v, want ErrCorrupt naming config", i, stored[i], flip, err)
			}
		}
	}
	for name, edit := range map[string]func(m map[string]json.RawMessage){
		"member added":   func(m map[string]json.RawMessage) { m["extra"] = json.RawMessage(`1`) },
		"member removed": func(m map[string]json.RawMessage) { delete(m, "pack_size") },
		"mac removed":    func(m map[string]json.RawMessage) { delete(m, configMACMember) },
		"name's case":    func(m map[string]json.RawMessage) { m["Block_size"] = m["block_size"]; delete(m, "block_size") },
		"number spelled": func(m map[string]json.RawMessage) { m["block_size"] = json.RawMessage(`65536.0`) },
	} {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(stored, &m); err != nil {
			t.Fatal(err)
		}
		edit(m)
		bad, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := k.verifyConfig(bad); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}

	if err := testSubkeys2(t).verifyConfig(stored); !errors.Is(err, ErrCorrupt) {
		t.Errorf("verified under another master key: %v", err)
	}
}

// FuzzConfigMAC: whatever the config's bytes, splitting off the mac never
// panics, and a config it accepts signs to one that verifies and means the
// same.
func FuzzConfigMAC(f *testing.F) {
	master := make([]byte, masterKeySize)
	k, err := deriveSubkeys2(master, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(`{"version":2,"block_size":65536}`))
	f.Add([]byte(`{"mac":"00"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		canonical, mac, err := canonicalConfig(data)
		if err != nil {
			return
		}
		if mac != nil {
			_ = k.verifyConfig(data)
			return
		}
		signed, err := k.signConfig(data)
		if err != nil {
			t.Fatalf("accepted, then not signed: %v", err)
		}
		if err := k.verifyConfig(signed); err != nil {
			t.Fatalf("signed, then not verified: %v", err)
		}
		again, _, err := canonicalConfig(signed)
		if err != nil || !bytes.Equal(again, canonical) {
			t.Fatalf("signing changed the config: %s to %s (%v)", canonical, again, err)
		}
	})
}
