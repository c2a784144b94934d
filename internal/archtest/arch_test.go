package archtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// root returns the repository root (two levels up from this package).
func root(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(filepath.Dir(wd))
}

// TestEveryPackageHasDocComment fails when a package has no package comment
// (go list reads it as the go tool does, build constraints included).
func TestEveryPackageHasDocComment(t *testing.T) {
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}}\t{{.Doc}}", "./...")
	cmd.Dir = root(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 10 {
		t.Fatalf("go list found only %d packages", len(lines))
	}
	for _, l := range lines {
		pkg, doc, _ := strings.Cut(l, "\t")
		if strings.TrimSpace(doc) == "" {
			t.Errorf("package %s has no doc comment", pkg)
		}
	}
}

// deps returns the transitive imports of a package (production code only).
func deps(t *testing.T, pkg string) map[string]bool {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", pkg)
	cmd.Dir = root(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v", pkg, err)
	}
	m := map[string]bool{}
	for _, l := range strings.Fields(string(out)) {
		m[l] = true
	}
	return m
}

// TestPackageBoundaries keeps test code out of the binary and the gateway
// side free of server internals.
func TestPackageBoundaries(t *testing.T) {
	const mod = "github.com/iotransit/iotransit/"
	rules := []struct {
		pkg       string
		forbidden []string
		why       string
	}{
		{"./cmd/iotransit", []string{"testing", mod + "internal/testutil"}, "test code does not ship in the binary"},
		{"./internal/gateway", []string{mod + "internal/api", mod + "internal/ingest", mod + "internal/registry", "github.com/nats-io/nats-server/v2/server"}, "the gateway side knows only the MQTT contract"},
		{"./internal/gateway/agent", []string{mod + "internal/api", mod + "internal/ingest", mod + "internal/registry", mod + "internal/node", "github.com/nats-io/nats-server/v2/server"}, "the agent reaches the cloud only through client and MQTT"},
		{"./cmd/iotransit-gateway", []string{
			"testing", mod + "internal/testutil", mod + "internal/api", mod + "internal/ingest", mod + "internal/registry",
			mod + "internal/node", mod + "internal/store", mod + "internal/forward", mod + "internal/backbone",
			"github.com/nats-io/nats-server/v2/server", "github.com/mochi-mqtt/server/v2",
		}, "the gateway's binary holds none of the cloud's code"},
		{"./internal/thingsee", []string{mod + "internal/ingest", "github.com/nats-io/nats.go"}, "the message model does not know transport or storage"},
		{"./internal/pki", []string{"github.com/nats-io/nats.go", mod + "internal/registry"}, "pki is stateless crypto"},
		{"./internal/testutil", []string{
			mod + "internal/node", mod + "internal/api", mod + "internal/ingest", mod + "internal/forward",
			mod + "internal/registry", mod + "internal/store", mod + "internal/backbone", mod + "internal/audit",
			mod + "internal/credential", mod + "internal/testutil/nodetest",
		}, "testutil is a leaf that every package's tests may import; a running node is nodetest's"},
		{"./internal/mosquitto", []string{"testing", mod + "internal/testutil"}, "the bench runs the broker in production"},
	}
	for _, r := range rules {
		d := deps(t, r.pkg)
		for _, f := range r.forbidden {
			if d[f] {
				t.Errorf("%s imports %s: %s", r.pkg, f, r.why)
			}
		}
	}
}

// testHelper reports whether a package exists only for tests: the test
// helper packages (testutil and below, …test such as mosquittotest) and
// archtest.
func testHelper(pkg string) bool {
	return strings.HasSuffix(pkg, "test") || strings.Contains(pkg, "/internal/testutil")
}

// TestProductionCodeImportsNoTestHelpers: no package outside the test
// helpers depends on testing or internal/testutil.
func TestProductionCodeImportsNoTestHelpers(t *testing.T) {
	const testutil = "github.com/iotransit/iotransit/internal/testutil"
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, "./...")
	cmd.Dir = root(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	checked := 0
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		if len(fields) == 0 || testHelper(fields[0]) {
			continue
		}
		checked++
		for _, d := range fields[1:] {
			if d == "testing" || d == testutil || strings.HasPrefix(d, testutil+"/") {
				t.Errorf("%s depends on %s: test helpers do not ship", fields[0], d)
			}
		}
	}
	if checked < 10 {
		t.Fatalf("only %d packages checked", checked)
	}
}
