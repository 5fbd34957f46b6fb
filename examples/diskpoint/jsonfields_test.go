package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/internal/demodisk"
)

// The restore point's JSON in create -json, show -json and list -json
// keeps its field names and their order, whatever type the library gives
// the restore point: scripts read these names.
func TestCLIRestorePointJSONFields(t *testing.T) {
	dir := t.TempDir()
	repo, img, config := filepath.Join(dir, "repo"), filepath.Join(dir, "d.img"), filepath.Join(dir, "vm.json")
	if err := demodisk.Create(img, 1<<20, 1, demodisk.MixedImage); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(config, []byte(`{"name":"vm"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	pre := script(t, dir, "pre.sh", "exit 0\n")
	post := script(t, dir, "post.sh", "exit 3\n") // so that warnings, omitted when empty, is there
	mustBinary(t, nil, "init", "-repo", repo)
	created := mustBinary(t, nil, "create", "-repo", repo, "-collection", "vm", "-consistency", "application",
		"-pre", pre, "-post", post, "-config", config, "-json", "d="+img)
	shown := mustBinary(t, nil, "show", "-repo", repo, "-collection", "vm", "-point", "latest", "-json")
	listed := mustBinary(t, nil, "list", "-repo", repo, "-collection", "vm", "-json")

	pointFields := []string{"id", "collection", "created", "consistency", "requested_consistency", "fallback_reason",
		"freeze_ms", "capture_spread_ms", "warnings", "config", "config_size", "excluded", "disks"}
	diskFields := []string{"name", "size", "block_size", "root", "capture", "parent", "changed_bytes", "stored_bytes",
		"metadata_bytes", "new_chunk_bytes", "change_source"}
	var list []json.RawMessage
	if err := json.Unmarshal([]byte(listed), &list); err != nil || len(list) != 1 {
		t.Fatalf("list -json printed %q: %v", listed, err)
	}
	for what, out := range map[string]string{"create -json": created, "show -json": shown, "list -json": string(list[0])} {
		var point struct {
			Disks []json.RawMessage `json:"disks"`
		}
		if err := json.Unmarshal([]byte(out), &point); err != nil || len(point.Disks) != 1 {
			t.Fatalf("%s printed %q: %v", what, out, err)
		}
		if got := objectKeys(t, []byte(out)); !slices.Equal(got, pointFields) {
			t.Errorf("%s: restore point fields\n%s\nwant\n%s", what, strings.Join(got, " "), strings.Join(pointFields, " "))
		}
		if got := objectKeys(t, point.Disks[0]); !slices.Equal(got, diskFields) {
			t.Errorf("%s: disk fields\n%s\nwant\n%s", what, strings.Join(got, " "), strings.Join(diskFields, " "))
		}
	}
}

// objectKeys returns the names of a JSON object's fields, in order.
func objectKeys(t *testing.T, data []byte) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(string(data)))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object: %q", data)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("%q: %v", data, err)
		}
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			t.Fatalf("%q: %v", data, err)
		}
		keys = append(keys, tok.(string))
	}
	return keys
}
