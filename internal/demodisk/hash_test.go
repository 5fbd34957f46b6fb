package demodisk

import (
	"os"
	"path/filepath"
	"testing"
)

// Two images hash alike exactly when their bytes are alike; a missing one
// is an error.
func TestHashTellsImagesApart(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	if err := Create(a, 1<<20, 1, MixedImage); err != nil {
		t.Fatal(err)
	}
	if err := Create(b, 1<<20, 1, MixedImage); err != nil {
		t.Fatal(err)
	}
	ha, err := Hash(a)
	if err != nil {
		t.Fatal(err)
	}
	if hb, err := Hash(b); err != nil || hb != ha {
		t.Fatalf("the same image hashes differently: %x %x %v", ha, hb, err)
	}
	if _, err := Scatter(b, 0.001, 2); err != nil {
		t.Fatal(err)
	}
	if hb, err := Hash(b); err != nil || hb == ha {
		t.Fatalf("a changed image hashes as before: %x %v", hb, err)
	}
	if _, err := Hash(filepath.Join(dir, "missing.img")); !os.IsNotExist(err) {
		t.Fatalf("Hash of a missing image: %v", err)
	}
}
