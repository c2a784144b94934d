package client

import (
	"strings"
	"testing"
)

// TestClientRefusesIDsThatNameAnotherPath: an id of "", "." or ".." would
// reach another resource once a server or proxy cleans the path.
func TestClientRefusesIDsThatNameAnotherPath(t *testing.T) {
	c, err := New(Config{Server: "https://iot.example.com:8443/prefix", Credential: "k"})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", ".", ".."} {
		if _, err := c.url(path("tenants", "acme", "gateways", id), nil); err == nil || !strings.Contains(err.Error(), "segment") {
			t.Errorf("id %q: %v, want a refusal", id, err)
		}
	}
	for _, id := range []string{"a.b", "...", "a/b", "%2e%2e"} {
		u, err := c.url(path("tenants", "acme", "gateways", id), nil)
		if err != nil {
			t.Errorf("id %q refused: %v", id, err)
			continue
		}
		if !strings.HasPrefix(u.EscapedPath(), "/prefix/v1/tenants/acme/gateways/") || strings.Count(u.EscapedPath(), "/") != 6 {
			t.Errorf("id %q made path %s", id, u.EscapedPath())
		}
	}
}
