package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/node"
)

// policy set from flags and from a file, policy show marking what is the
// node's default; a file with an unknown member is refused before it is
// sent, and a tenant key may read but not set.
func TestAdminPolicy(t *testing.T) {
	a := startAdminNode(t)
	dev := "--tenant=" + node.DevTenant

	out := a.mustOp(t, "policy", "show", dev)
	if row := tableRow(t, out, "quotas.ingestMsgsPerSecond"); strings.Join(row, " ") != "quotas.ingestMsgsPerSecond 500 node default" {
		t.Fatalf("default rate row %q", row)
	}

	out = a.mustOp(t, "policy", "set", dev, "--msg-rate", "2.5", "--gateways", "3", "--allow-host", "*.example.com", "--require-auth", "--api-key-max-lifetime", "720h", "--retention", "48h",
		"--allow-cidr", "10.0.0.0/8", "--allow-cidr", "2001:db8::/32", "--stored-bytes", "1073741824",
		"--rejected-retention", "72h", "--dead-letter-retention", "96h")
	for _, want := range []string{
		"quotas.ingestMsgsPerSecond 2.5 tenant policy",
		"quotas.ingestBurst 5000 node default",
		"quotas.gateways 3 tenant policy",
		"quotas.integrations no bound node default",
		"integrations.allowedHosts *.example.com tenant policy",
		"integrations.requireAuth true tenant policy",
		"apiKeyMaxLifetime 720h0m0s tenant policy",
		"retention.messagesMaxAge 48h0m0s tenant policy",
		"retention.messagesMaxBytes no bound node default",
		"apiAllowCIDRs 10.0.0.0/8,2001:db8::/32 tenant policy",
		"quotas.storedBytes 1073741824 tenant policy",
		"retention.rejectedMaxAge 72h0m0s tenant policy",
		"retention.deadLettersMaxAge 96h0m0s tenant policy",
	} {
		first := strings.Fields(want)[0]
		if row := tableRow(t, out, first); strings.Join(row, " ") != want {
			t.Errorf("policy set row %q, want %q", strings.Join(row, " "), want)
		}
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(file, []byte(`{"strictValidation": true, "quotas": {"apiKeys": 5}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var v client.PolicyView
	a.mustJSON(t, &v, "policy", "set", dev, "--file", file)
	if v.Policy.StrictValidation == nil || !*v.Policy.StrictValidation || v.Policy.Quotas == nil || *v.Policy.Quotas.APIKeys != 5 ||
		v.Policy.Quotas.Gateways != nil || v.Policy.APIKeyMaxLifetime != nil {
		t.Fatalf("policy set --file replaces the whole policy: %+v", v.Policy)
	}

	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"quotas": {"diskBytes": 5}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.op(t, "policy", "set", dev, "--file", bad); err == nil || !strings.Contains(err.Error(), "diskBytes") {
		t.Fatalf("a file with an unknown member: %v", err)
	}
	if _, _, err := a.op(t, "policy", "set", dev, "--file", file, "--gateways", "1"); err == nil || !strings.Contains(err.Error(), "--file") {
		t.Fatalf("--file with another policy flag: %v", err)
	}
	_, _, err := a.op(t, "policy", "set", dev, "--certificate-validity", "1h")
	if err == nil {
		t.Fatal("an unknown flag was taken")
	}
	_, _, err = a.op(t, "policy", "set", dev, "--cert-validity", "87600h")
	wantProblem(t, err, "policy.invalid")

	var key struct{ Key string }
	a.mustJSON(t, &key, "apikey", "create", dev, "--scope", "gateways:read")
	asKey := func(args ...string) (string, error) {
		out, _, err := a.cli(t, append(args, "--server", a.server, "--ca", a.caFile, "--key", key.Key, dev)...)
		return out, err
	}
	if _, err := asKey("policy", "show"); err != nil {
		t.Fatalf("a tenant key reads its policy: %v", err)
	}
	_, err = asKey("policy", "set", "--gateways", "100")
	wantProblem(t, err, "api.operator_only")
}
