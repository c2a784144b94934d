package thingsee

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/fault"
)

// TestThingseeEveryRejectionCodeIsAFault reads the Code* constants of
// thingsee.go and requires a fault definition for each, and none for
// anything else, so a new rejection code cannot miss docs/errors.md.
func TestThingseeEveryRejectionCodeIsAFault(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "thingsee.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	codes := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok {
			return true
		}
		for i, name := range vs.Names {
			if !strings.HasPrefix(name.Name, "Code") || i >= len(vs.Values) {
				continue
			}
			lit, ok := vs.Values[i].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				t.Errorf("%s is not a string literal", name.Name)
				continue
			}
			code, err := strconv.Unquote(lit.Value)
			if err != nil {
				t.Fatal(err)
			}
			codes[code] = true
		}
		return false
	})
	if len(codes) < 16 {
		t.Fatalf("found %d Code* constants in thingsee.go, want at least 16", len(codes))
	}
	for code := range codes {
		d, ok := Fault(code)
		if !ok {
			t.Errorf("rejection code %s has no fault definition", code)
			continue
		}
		if d.Code() != code || !strings.HasPrefix(code, "thingsee.") || d.Kind() == fault.Internal {
			t.Errorf("rejection code %s: definition %s of kind %s", code, d.Code(), d.Kind())
		}
	}
	if len(rejections) != len(codes) {
		t.Errorf("%d fault definitions for %d rejection codes", len(rejections), len(codes))
	}
	if _, ok := Fault("thingsee.no_such_code"); ok {
		t.Error("Fault found a definition for an unknown code")
	}
}
