// Package apisurface_test keeps names that only their own package uses out
// of the public API: they are implementation details that callers should
// not come to depend on.
package apisurface_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// exported returns the exported package-level names (types, functions,
// variables, constants) declared in the non-test Go files of dir.
func exported(t *testing.T, dir string) map[string]bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go files in %s: %v", dir, err)
	}
	names := map[string]bool{}
	fset := token.NewFileSet()
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, path, src, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			switch d := decl.(type) {
			case *ast.FuncDecl:
				if d.Recv == nil && d.Name.IsExported() {
					names[d.Name.Name] = true
				}
			case *ast.GenDecl:
				for _, spec := range d.Specs {
					switch s := spec.(type) {
					case *ast.TypeSpec:
						names[s.Name.Name] = s.Name.IsExported()
					case *ast.ValueSpec:
						for _, n := range s.Names {
							names[n.Name] = n.IsExported()
						}
					}
				}
			}
		}
	}
	return names
}

// Names that only their own package needs are not exported: the index
// file's and pack header's entry types and the lock protocol's settle time
// (chain), and the permission check the script hook applies (consistency).
func TestInternalsAreNotExported(t *testing.T) {
	for dir, internal := range map[string][]string{
		"../../chain":       {"IndexedPack", "PackEntry", "LockSettle"},
		"../../consistency": {"CheckOwnerOnly"},
	} {
		names := exported(t, dir)
		if !names["Repository"] && !names["Hook"] {
			t.Fatalf("%s: found none of the package's known exported names; is the parser looking at the right files?", dir)
		}
		for _, name := range internal {
			if names[name] {
				t.Errorf("%s exports %s, which only the package itself uses", filepath.Base(dir), name)
			}
		}
	}
}
