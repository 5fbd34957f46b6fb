package chain

import (
	"bytes"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/zeebo/blake3"
)

// A version 2 repository's config is read before the key ring is unlocked
// (it says how the repository is made), so anyone who can write to the
// store can change it. In an encrypted repository it therefore carries a
// MAC, verified once the key ring is open: keyed BLAKE3-256 under the
// config MAC key of its canonical bytes. Canonical bytes: the config's JSON
// object without its "mac" member, members sorted by name, no insignificant
// white space, values exactly as written (json.Marshal of a
// map[string]json.RawMessage). Every member's name and value is covered, so
// a member added, removed, renamed or changed is detected; white space
// between tokens is not, and means nothing.

const configMACMember = "mac"

// canonicalConfig splits stored config bytes into their canonical bytes
// and the MAC they carry (nil if none).
func canonicalConfig(stored []byte) (canonical, mac []byte, err error) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(stored, &members); err != nil {
		return nil, nil, corrupt(configName, "%v", err)
	}
	if members == nil {
		return nil, nil, corrupt(configName, "not a JSON object")
	}
	if raw, ok := members[configMACMember]; ok {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, nil, corrupt(configName, "mac: %v", err)
		}
		// Lower case only: every byte of the mac counts.
		if mac, err = hex.DecodeString(s); err != nil || len(mac) != 32 || hex.EncodeToString(mac) != s {
			return nil, nil, corrupt(configName, "mac %q: want 64 lower-case hex digits", s)
		}
		delete(members, configMACMember)
	}
	canonical, err = json.Marshal(members)
	if err != nil {
		return nil, nil, corrupt(configName, "%v", err)
	}
	return canonical, mac, nil
}

func (k *subkeys2) configMACOf(canonical []byte) []byte {
	h, _ := blake3.NewKeyed(k.configMAC[:])
	h.Write(canonical)
	return h.Sum(nil)
}

// signConfig returns config (a JSON object without a "mac" member) as it is
// stored: its members sorted, indented, with the MAC added.
func (k *subkeys2) signConfig(config []byte) ([]byte, error) {
	canonical, mac, err := canonicalConfig(config)
	if err != nil {
		return nil, err
	}
	if mac != nil {
		return nil, fmt.Errorf("sign %s: it has a mac already", configName)
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(canonical, &members); err != nil {
		return nil, err
	}
	quoted, err := json.Marshal(hex.EncodeToString(k.configMACOf(canonical)))
	if err != nil {
		return nil, err
	}
	members[configMACMember] = quoted
	var out bytes.Buffer
	raw, err := json.Marshal(members)
	if err != nil {
		return nil, err
	}
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// verifyConfig checks the MAC of stored config bytes: a config without one,
// or whose MAC is not this key ring's, is ErrCorrupt naming the config.
func (k *subkeys2) verifyConfig(stored []byte) error {
	canonical, mac, err := canonicalConfig(stored)
	if err != nil {
		return err
	}
	if mac == nil {
		return corrupt(configName, "no mac, in an encrypted repository")
	}
	if subtle.ConstantTimeCompare(mac, k.configMACOf(canonical)) != 1 {
		return corrupt(configName, "mac does not match: changed without the key, or made with another")
	}
	return nil
}
