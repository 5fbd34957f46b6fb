package consistency

import (
	"fmt"
	"strings"
	"time"
)

// DefaultSkipAfterFailure is how many application-consistent requests are
// taken file-system-consistent after application hooks failed, as Azure
// does: the next three skip them, the fourth tries again.
const DefaultSkipAfterFailure = 3

// FallbackState is what a collection remembers between creates about its
// application hooks. The caller persists it (snapshot keeps it in the
// repository, so it survives a restart).
type FallbackState struct {
	// SkipApplication counts the application-consistent requests still to
	// be taken file-system-consistent without running application hooks.
	SkipApplication int       `json:"skip_application"`
	LastFailure     time.Time `json:"last_failure,omitzero"`
	LastReason      string    `json:"last_reason,omitempty"`
}

// Decide returns the mode to attempt for a request of mode requested, and
// why it is weaker, if it is. It counts the request against SkipApplication.
func (s *FallbackState) Decide(requested Mode) (Mode, string) {
	if requested != Application || s.SkipApplication <= 0 {
		return requested, ""
	}
	s.SkipApplication--
	return FileSystem, fmt.Sprintf("application hooks skipped: they failed at %s (%s); %d more application requests will skip them",
		s.LastFailure.Format(time.RFC3339), s.LastReason, s.SkipApplication)
}

// Record notes the outcome of a create: after application hooks failed
// (a pre script, or a post script after the capture), the next skipAfter
// application requests skip them.
func (s *FallbackState) Record(out Outcome, skipAfter int, now time.Time) {
	if out.ApplicationFailed {
		s.SkipApplication = skipAfter
		s.LastFailure = now.UTC()
		s.LastReason = strings.Join(nonEmpty(append([]string{out.failureOrFallback()}, out.Warnings...)), "; ")
	}
}

// failureOrFallback is why hooks failed, or, for an Outcome made by hand,
// its FallbackReason.
func (o Outcome) failureOrFallback() string {
	if o.failure != "" {
		return o.failure
	}
	return o.FallbackReason
}

func nonEmpty(s []string) []string {
	var out []string
	for _, x := range s {
		if x != "" {
			out = append(out, x)
		}
	}
	return out
}
