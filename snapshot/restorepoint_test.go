package snapshot

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/consistency"
)

// fillNonZero sets every field of the struct v points to, recursively, to
// a value that is not its zero value, so that a field the conversion
// forgets shows up as a difference.
func fillNonZero(t *testing.T, v reflect.Value, seed *int) {
	t.Helper()
	*seed++
	switch v.Kind() {
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Date(2026, 11, 23, 1, 2, *seed, 0, time.UTC)))
			return
		}
		for i := range v.NumField() {
			fillNonZero(t, v.Field(i), seed)
		}
	case reflect.String:
		v.SetString("s" + string(rune('a'+*seed%26)))
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(*seed))
	case reflect.Array:
		for i := range v.Len() {
			fillNonZero(t, v.Index(i), seed)
		}
	case reflect.Uint8:
		v.SetUint(uint64(*seed))
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range v.Len() {
			fillNonZero(t, v.Index(i), seed)
		}
	default:
		t.Fatalf("fillNonZero: a %s field; teach the test its kind", v.Type())
	}
}

// Every field of a stored manifest reaches the RestorePoint and comes back,
// and the two print the same JSON: what the CLI prints did not change when
// RestorePoint stopped embedding chain.Manifest.
func TestRestorePointCarriesEveryManifestField(t *testing.T) {
	var m chain.Manifest
	seed := 0
	fillNonZero(t, reflect.ValueOf(&m).Elem(), &seed)
	rp := pointFromManifest(&m)
	if back := rp.manifest(); !reflect.DeepEqual(back, m) {
		t.Errorf("manifest -> restore point -> manifest lost fields:\n got %+v\nwant %+v", back, m)
	}
	want, err := json.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(rp)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("restore point JSON\n%s\nwant the manifest's\n%s", got, want)
	}
	var _ consistency.Mode = rp.Consistency // a Mode, not a string
	var _ consistency.Mode = rp.RequestedConsistency
	if d, ok := rp.Disk(m.Disks[1].Name); !ok || d.manifest() != m.Disks[1] {
		t.Errorf("Disk(%q) = %+v, %v", m.Disks[1].Name, d, ok)
	}
}
