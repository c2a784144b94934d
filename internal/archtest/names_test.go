package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// backboneName matches a string literal that starts a JetStream stream,
// subject, consumer or bucket name of iotransit's layout.
var backboneName = regexp.MustCompile(`^(MSG_|REJ_|AUD_|DLQ_|iot\.|iot_|fwd_|audit\.[^.]*\.(entry|checkpoint)$|iotransit_(kms|system|tenants|serials|enrollment|credentials|leases|factory)$)`)

// TestNamesComeFromTheCatalogue keeps the names of streams, subjects and
// buckets in one place (internal/backbone/names, which checks every id it
// is given): production code elsewhere must not spell them.
func TestNamesComeFromTheCatalogue(t *testing.T) {
	r := root(t)
	catalogue := filepath.Join(r, "internal", "backbone", "names")
	err := filepath.WalkDir(r, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); name == "testdata" || name == "node_modules" || strings.HasPrefix(name, ".") && path != r || path == catalogue {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err == nil && backboneName.MatchString(s) {
				rel, _ := filepath.Rel(r, fset.Position(lit.Pos()).Filename)
				t.Errorf("%s:%d: %q is a backbone name; build it with internal/backbone/names", rel, fset.Position(lit.Pos()).Line, s)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
