package snapshot

import (
	"reflect"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
)

// unsetFields names the fields of the struct v that are zero.
func unsetFields(v any) []string {
	rv := reflect.ValueOf(v)
	var out []string
	for i := range rv.NumField() {
		if rv.Field(i).IsZero() {
			out = append(out, rv.Type().Field(i).Name)
		}
	}
	return out
}

// Every option of GC and Verify reaches the storage layer, and every one
// the storage layer has is offered: a field added to chain's options and
// not to snapshot's fails here.
func TestGCAndVerifyOptionsReachChain(t *testing.T) {
	var gcSeen []GCProgress
	gc := GCOptions{DryRun: true, RepackUnused: 0.5, LockWait: time.Second, IgnoreDamaged: true, IncompleteUploadAge: time.Hour,
		Progress: func(p GCProgress) { gcSeen = append(gcSeen, p) }}.chain()
	if unset := unsetFields(gc); len(unset) > 0 {
		t.Errorf("chain.GCOptions fields left unset: %v", unset)
	}
	if gc.DryRun != true || gc.RepackUnused != 0.5 || gc.LockWait != time.Second || !gc.IgnoreDamaged || gc.IncompleteUploadAge != time.Hour {
		t.Errorf("GC options became %+v", gc)
	}
	gc.Progress(chain.GCProgress{Phase: "mark", Done: 1, Total: 2})
	if len(gcSeen) != 1 || gcSeen[0] != (GCProgress{Phase: "mark", Done: 1, Total: 2}) {
		t.Errorf("GC progress reached the caller as %+v", gcSeen)
	}
	if (GCOptions{}).chain().Progress != nil {
		t.Error("no Progress became a Progress")
	}

	subset, err := ParseDataSubset("2/7")
	if err != nil {
		t.Fatal(err)
	}
	var verifySeen int64
	verify := VerifyOptions{StructureOnly: true, ReadData: &subset, Progress: func(done, total int64) { verifySeen = done }}.chain()
	if unset := unsetFields(verify); len(unset) > 0 {
		t.Errorf("chain.VerifyOptions fields left unset: %v", unset)
	}
	if !verify.StructureOnly || verify.ReadData != &subset {
		t.Errorf("verify options became %+v", verify)
	}
	verify.Progress(7, 9)
	if verifySeen != 7 {
		t.Errorf("verify progress reached the caller as %d", verifySeen)
	}
}
