package registry_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/internal/registry"
)

// codeFormat is STYLE §2.3/§2.9: snake_case, namespaced by component.
var codeFormat = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*\.[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// The faults of the packages linked into this test: the walk must see them,
// or a package defines its faults somewhere the catalogue cannot reach.
var linked = []*fault.Definition{
	pki.ErrCSRInvalid, pki.ErrCSRWeakKey, pki.ErrCSRCNMismatch, pki.ErrCertInvalid,
	registry.ErrTenantInvalid, registry.ErrTenantExists, registry.ErrTenantNotFound,
	registry.ErrSerialInvalid, registry.ErrGatewayExists, registry.ErrGatewayNotFound,
	registry.ErrGatewayNotActive, registry.ErrStateInvalid,
	fault.ErrInternal,
}

func TestFaultCatalogueCodes(t *testing.T) {
	defs := fault.Definitions()
	byCode := map[string]*fault.Definition{}
	messages := map[string]string{}
	for _, d := range defs {
		code := d.Code()
		if prev, dup := byCode[code]; dup && prev != d {
			t.Errorf("code %q has two definitions", code)
		}
		byCode[code] = d
		if !codeFormat.MatchString(code) {
			t.Errorf("code %q is not snake_case component.name", code)
		}
		if strings.Contains(code, "failed_to_") || strings.Contains(code, "fail_to_") {
			t.Errorf("code %q has a failed_to_ prefix", code)
		}
		if d.Kind().String() == "unknown" {
			t.Errorf("code %q has no valid kind (%d)", code, int(d.Kind()))
		}
		msg := d.Message()
		if msg == "" || strings.TrimSpace(msg) != msg || strings.Contains(msg, "%") {
			t.Errorf("code %q has a bad public message %q", code, msg)
		}
		if other, dup := messages[msg]; dup {
			t.Errorf("codes %q and %q share the public message %q", other, code, msg)
		}
		messages[msg] = code
	}
	for _, d := range linked {
		if byCode[d.Code()] != d {
			t.Errorf("definition %q is missing from fault.Definitions()", d.Code())
		}
	}
	for _, d := range defs {
		if c := d.Code(); strings.HasPrefix(c, "pki.") || strings.HasPrefix(c, "registry.") {
			found := false
			for _, l := range linked {
				found = found || l == d
			}
			if !found {
				t.Errorf("definition %q is not in this test's list: add it (and document it)", c)
			}
		}
	}
	t.Logf("%d fault definitions checked", len(defs))
}
