package chain

import "testing"

// Of two index loads that race, the one begun later stays installed,
// whichever finishes last: an index from before a GC must not replace
// one loaded after it.
func TestSetIndexNeverGoesBack(t *testing.T) {
	r := &Repository{idx: newIndex()}
	before, after := newIndex(), newIndex() // begun in this order
	r.setIndex(after)
	r.setIndex(before) // the slower load finishes last
	if r.index() != after {
		t.Fatal("an index begun earlier replaced one begun later")
	}
	newer := newIndex()
	r.setIndex(newer)
	if r.index() != newer {
		t.Fatal("a newer index was not installed")
	}
}
