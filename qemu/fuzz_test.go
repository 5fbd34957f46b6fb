package qemu

import (
	"strings"
	"testing"
)

// FuzzDecodeQMPMessage: no line from a QMP server panics the decoder, and
// what it accepts is exactly one of greeting, reply with an id and one of
// return or error, or event.
func FuzzDecodeQMPMessage(f *testing.F) {
	for _, s := range []string{
		`{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": ["oob"]}}`,
		`{"return": {}, "id": 1}`,
		`{"error": {"class": "GenericError", "desc": "no"}, "id": 2}`,
		`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "JOB_STATUS_CHANGE", "data": {"status": "null", "id": "j"}}`,
		`{"return": [], "error": {"class": "x"}, "id": 3}`,
		`{"id": 4}`,
		`[1,2]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		m, err := decodeQMPMessage(line)
		if err != nil {
			return
		}
		switch m.kind() {
		case "reply":
			if m.ID == nil || (m.Return == nil) == (m.Error == nil) {
				t.Fatalf("accepted a reply without an id or with neither/both of return and error: %q", line)
			}
		case "event":
			if m.Return != nil || m.Error != nil {
				t.Fatalf("accepted an event that is also a reply: %q", line)
			}
		}
	})
}

func TestDecodeQMPMessageRefusesOversizeLine(t *testing.T) {
	line := `{"return": "` + strings.Repeat("a", maxQMPLine) + `", "id": 1}`
	if _, err := decodeQMPMessage([]byte(line)); err == nil {
		t.Fatal("a line over the limit was accepted")
	}
}
