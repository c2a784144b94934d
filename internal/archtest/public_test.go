package archtest

import (
	"strings"
	"testing"
)

// nonStandardDeps returns the transitive imports of a package (production
// code only) that are not in the standard library (whose paths have no dot
// in their first element), itself excluded.
func nonStandardDeps(t *testing.T, pkg string) []string {
	t.Helper()
	var out []string
	for d := range deps(t, pkg) {
		if first, _, _ := strings.Cut(d, "/"); strings.Contains(first, ".") && d != pkg {
			out = append(out, d)
		}
	}
	return out
}

// TestPublicPackagesAreLeaves keeps the packages customers import small and
// free of the server: client and receiver import no internal package (nor,
// through one, NATS, mochi-mqtt or Prometheus). client may use the
// WebSocket library for the message stream; receiver needs only the
// standard library.
func TestPublicPackagesAreLeaves(t *testing.T) {
	const mod = "github.com/iotransit/iotransit/"
	rules := []struct {
		pkg     string
		allowed []string // import path prefixes
		why     string
	}{
		{mod + "client", []string{"github.com/coder/websocket"}, "the API client is a leaf customers import: the standard library and the WebSocket library of the stream"},
		{mod + "receiver", nil, "a customer's receiver needs only the standard library"},
	}
	for _, r := range rules {
		t.Run(strings.TrimPrefix(r.pkg, mod), func(t *testing.T) {
			deps := nonStandardDeps(t, r.pkg)
		next:
			for _, d := range deps {
				for _, a := range r.allowed {
					if d == a || strings.HasPrefix(d, a+"/") {
						continue next
					}
				}
				t.Errorf("%s imports %s: %s", r.pkg, d, r.why)
			}
		})
	}
}
