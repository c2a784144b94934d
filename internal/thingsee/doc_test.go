package thingsee

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"
)

// TestThingseeDocComments enforces STYLE §2.9: a package comment saying what
// the package owns, and a doc comment starting with the name on every
// exported declaration and exported struct field.
func TestThingseeDocComments(t *testing.T) {
	fset := token.NewFileSet()
	pkgDoc := false
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		if f.Doc != nil && strings.HasPrefix(f.Doc.Text(), "Package thingsee ") {
			pkgDoc = true
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Name.IsExported() {
					checkDoc(t, fset, d.Name.Name, d.Doc, nil)
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						if !s.Name.IsExported() {
							continue
						}
						doc := s.Doc
						if doc == nil && len(d.Specs) == 1 {
							doc = d.Doc
						}
						checkDoc(t, fset, s.Name.Name, doc, nil)
						if st, ok := s.Type.(*ast.StructType); ok {
							for _, fld := range st.Fields.List {
								for _, n := range fld.Names {
									if n.IsExported() {
										checkDoc(t, fset, s.Name.Name+"."+n.Name, fld.Doc, fld.Comment)
									}
								}
							}
						}
					case *ast.ValueSpec:
						for _, n := range s.Names {
							if n.IsExported() {
								doc := s.Doc
								if doc == nil {
									doc = d.Doc
								}
								checkDoc(t, fset, n.Name, doc, s.Comment)
							}
						}
					}
				}
			}
		}
	}
	if !pkgDoc {
		t.Error("no file carries a \"Package thingsee ...\" comment")
	}
}

func checkDoc(t *testing.T, fset *token.FileSet, name string, doc, line *ast.CommentGroup) {
	t.Helper()
	if doc == nil && line == nil {
		t.Errorf("%s has no doc comment", name)
		return
	}
	if doc == nil {
		return // a field documented by its line comment
	}
	text := doc.Text()
	short := name[strings.LastIndexByte(name, '.')+1:]
	if !strings.Contains(text, short) || !strings.HasSuffix(strings.TrimSpace(text), ".") {
		t.Errorf("%s at %s: doc comment %q should name it and be full sentences", name, fset.Position(doc.Pos()), text)
	}
}
