package chain

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzOpenSealed2 feeds the openers of keys v2's sealed objects (a blob,
// a pack header, a lock, a named object: crypt2.go) arbitrary bytes under
// a fixed master key. Whatever the bytes, opening fails with ErrCorrupt,
// or gives exactly what was sealed for that kind and context: the seeds
// seal fuzzPlaintext(kind, context), so bytes that open must be a seed's
// (or a forgery, which is the failure this looks for); nothing panics.
func FuzzOpenSealed2(f *testing.F) {
	k, err := deriveSubkeys2(make([]byte, masterKeySize), nil)
	if err != nil {
		f.Fatal(err)
	}
	for kind := range uint8(4) {
		for _, context := range []string{"", "manifests/vm/1", "x"} {
			f.Add(kind, context, sealFuzzed(k, kind, context, fuzzPlaintext(kind, context)))
		}
	}
	f.Add(uint8(0), "", []byte{})
	f.Add(uint8(1), "", make([]byte, sealOverhead2))
	f.Fuzz(func(t *testing.T, kind uint8, context string, sealed []byte) {
		kind %= 4
		got, err := openFuzzed(k, kind, context, sealed)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("open: %v, want ErrCorrupt", err)
			}
			return
		}
		if want := fuzzPlaintext(kind, context); !bytes.Equal(got, want) || len(sealed) != len(want)+sealOverhead2 {
			t.Fatalf("%d sealed bytes opened to %q, want %q", len(sealed), got, want)
		}
	})
}

// fuzzPlaintext is what FuzzOpenSealed2's seeds seal: it depends on the
// kind and the context, so that bytes sealed for one and opened as another
// show.
func fuzzPlaintext(kind uint8, context string) []byte {
	return []byte{'p', kind, byte(len(context))}
}

// sealFuzzed seals plaintext as the given kind (0 blob, 1 pack header, 2
// lock, 3 named object), bound to context.
func sealFuzzed(k *subkeys2, kind uint8, context string, plaintext []byte) []byte {
	switch kind {
	case 0:
		return k.sealBlob(nil, Hash([]byte(context)), plaintext)
	case 1:
		return k.sealPackHeader(nil, plaintext, int64(len(context)))
	case 2:
		return k.sealLock(context, plaintext)
	default:
		return k.sealNamed(context, plaintext)
	}
}

// openFuzzed undoes sealFuzzed.
func openFuzzed(k *subkeys2, kind uint8, context string, sealed []byte) ([]byte, error) {
	switch kind {
	case 0:
		return k.openBlob(nil, Hash([]byte(context)), sealed)
	case 1:
		return k.openPackHeader("packs/fuzz", sealed, int64(len(context)))
	case 2:
		return k.openLock(context, sealed)
	default:
		return k.openNamed(context, sealed)
	}
}
