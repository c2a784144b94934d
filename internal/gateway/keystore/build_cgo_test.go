//go:build cgo

package keystore_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestKeystoreBuildsWithoutCgo: the package (and so the agent) builds with
// CGO_ENABLED=0, where the token store refuses with ErrNeedsCgo
// (TestKeystorePKCS11NeedsCgo, run here in such a build).
func TestKeystoreBuildsWithoutCgo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the package again without cgo")
	}
	cmd := exec.Command("go", "test", "-count=1", "-v", "-run", "^TestKeystorePKCS11NeedsCgo$", ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestKeystorePKCS11NeedsCgo") {
		t.Fatalf("CGO_ENABLED=0 go test: %v\n%s", err, out)
	}
}
