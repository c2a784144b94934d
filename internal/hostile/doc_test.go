package hostile_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestSecurityDocNamesTheSuite keeps docs/SECURITY.md's table of tested
// attacks in step with the tests: every test it names exists, and every
// replay of this suite (TestHostile…) is in the table.
func TestSecurityDocNamesTheSuite(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "SECURITY.md"))
	if err != nil {
		t.Fatal(err)
	}
	named := map[string]bool{}
	for _, m := range regexp.MustCompile("`((?:Test|Fuzz)[A-Za-z0-9_]+)`").FindAllStringSubmatch(string(doc), -1) {
		named[m[1]] = true
	}
	exists := map[string]bool{}
	decl := regexp.MustCompile(`(?m)^func ((?:Test|Fuzz)[A-Za-z0-9_]+)\(`)
	err = filepath.WalkDir(filepath.Join("..", ".."), func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && d.Name() != "." && d.Name() != ".." || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range decl.FindAllSubmatch(b, -1) {
			exists[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for n := range named {
		if !exists[n] {
			t.Errorf("docs/SECURITY.md names %s, which is no test", n)
		}
	}
	for n := range exists {
		if strings.HasPrefix(n, "TestHostile") && !strings.HasPrefix(n, "TestHostileMeasure") && !named[n] {
			t.Errorf("%s replays an attack but docs/SECURITY.md does not name it", n)
		}
	}
}
