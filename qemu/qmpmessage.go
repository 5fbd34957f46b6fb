package qemu

import (
	"encoding/json"
	"errors"
	"fmt"
)

// maxQMPLine bounds one line from the QMP server: replies to the commands
// this package sends are a few KiB; anything near the bound is hostile.
const maxQMPLine = 1 << 20

// qmpMessage is one line from a QMP server: the greeting, a command's
// return or error, or an asynchronous event.
type qmpMessage struct {
	Greeting *struct {
		Version      json.RawMessage `json:"version"`
		Capabilities []string        `json:"capabilities"`
	} `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *QMPError       `json:"error"`
	Event  string          `json:"event"`
	Data   json.RawMessage `json:"data"`
	// ID echoes the id of the command a return or error answers.
	ID *uint64 `json:"id"`
}

// QMPError is an error a QMP server returned for a command.
type QMPError struct {
	Command string `json:"-"`
	Class   string `json:"class"`
	Desc    string `json:"desc"`
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

// kind says what a message is: exactly one of greeting, reply (with an
// id), or event.
func (m *qmpMessage) kind() string {
	switch {
	case m.Greeting != nil:
		return "greeting"
	case m.Event != "":
		return "event"
	default:
		return "reply"
	}
}

// decodeQMPMessage decodes and validates one line from a QMP server.
func decodeQMPMessage(line []byte) (*qmpMessage, error) {
	if len(line) > maxQMPLine {
		return nil, fmt.Errorf("a line of %d bytes is over the %d-byte limit", len(line), maxQMPLine)
	}
	var m qmpMessage
	if err := json.Unmarshal(line, &m); err != nil {
		return nil, fmt.Errorf("not a QMP message: %w", err)
	}
	switch m.kind() {
	case "greeting":
		if m.Return != nil || m.Error != nil || m.Event != "" {
			return nil, errors.New("a greeting that is also a reply or event")
		}
	case "event":
		if m.Return != nil || m.Error != nil {
			return nil, fmt.Errorf("event %q that is also a reply", m.Event)
		}
	default:
		if (m.Return == nil) == (m.Error == nil) {
			return nil, errors.New("a reply with neither or both of return and error")
		}
		if m.ID == nil {
			return nil, errors.New("a reply without the id of its command")
		}
		if m.Error != nil && m.Error.Class == "" {
			return nil, errors.New("an error without a class")
		}
	}
	return &m, nil
}
