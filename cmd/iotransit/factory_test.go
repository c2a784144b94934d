package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFactoryProvisionThenClaim: the operator provisions a batch into a
// directory (a label file per gateway, 0600, holding serial, model and
// claim code; a manifest without codes; no code printed), then a tenant
// claims a gateway with its label file as --code-file, once; a tenant key
// cannot register a serial directly.
func TestFactoryProvisionThenClaim(t *testing.T) {
	a := startAdminNode(t)
	dir := filepath.Join(t.TempDir(), "batch")
	out := a.mustOp(t, "factory", "provision", "--count", "3", "--model", "TSGW06", "--out", dir)
	wantLines(t, out, "SERIAL", "batch ", "3 gateways", "gateway claim")

	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("out dir: %v %v", fi.Mode(), err)
	}
	labels, _ := filepath.Glob(filepath.Join(dir, "*.label"))
	manifests, _ := filepath.Glob(filepath.Join(dir, "manifest-*.json"))
	if len(labels) != 3 || len(manifests) != 1 {
		t.Fatalf("labels %v, manifests %v", labels, manifests)
	}
	codes := map[string]string{}
	for _, f := range append(labels, manifests...) {
		fi, err := os.Stat(f)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v", f, fi.Mode(), err)
		}
	}
	for _, f := range labels {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		serial := strings.TrimSuffix(filepath.Base(f), ".label")
		code := labelCode(string(b))
		if !strings.Contains(string(b), "serial: "+serial+"\n") || !strings.Contains(string(b), "model: TSGW06\n") || len(code) != 23 {
			t.Fatalf("label %s:\n%s", f, b)
		}
		codes[serial] = code
	}
	mb, _ := os.ReadFile(manifests[0])
	var m manifest
	if err := json.Unmarshal(mb, &m); err != nil || len(m.Gateways) != 3 || m.Batch == "" || m.Model != "TSGW06" {
		t.Fatalf("manifest %s: %v", mb, err)
	}
	for serial, code := range codes {
		if strings.Contains(out, code) || strings.Contains(string(mb), code) {
			t.Errorf("the code of %s is printed or in the manifest", serial)
		}
		if _, ok := a.n.Registry().Gateway("plant", serial); ok {
			t.Errorf("%s is bound before a claim", serial)
		}
	}

	a.mustOp(t, "tenant", "create", "plant")
	var key struct{ Key string }
	a.mustJSON(t, &key, "apikey", "create", "--tenant", "plant", "--scope", "gateways:write", "--scope", "gateways:read", "--name", "installer")
	keyFile := filepath.Join(t.TempDir(), "plant.key")
	if err := os.WriteFile(keyFile, []byte(key.Key), 0o600); err != nil {
		t.Fatal(err)
	}
	asTenant := func(args ...string) (string, error) {
		t.Helper()
		o, _, err := a.cli(t, append(args, "--tenant", "plant", "--server", a.server, "--ca", a.caFile, "--key-file", keyFile)...)
		return o, err
	}
	serial := m.Gateways[0].Serial
	label := filepath.Join(dir, m.Gateways[0].Label)
	o, err := asTenant("gateway", "claim", "--serial", serial, "--code-file", label)
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	if row := tableRow(t, o, serial); row[1] != "active" {
		t.Errorf("claimed row %v", row)
	}
	if _, ok := a.n.Registry().Gateway("plant", serial); !ok {
		t.Error("the claim did not bind the gateway")
	}
	_, err = asTenant("gateway", "claim", "--serial", serial, "--code", codes[serial])
	wantProblem(t, err, "registry.claim_invalid")
	_, err = asTenant("gateway", "register", m.Gateways[1].Serial)
	wantProblem(t, err, "api.operator_only")
	o, err = asTenant("gateway", "claim", "--serial", m.Gateways[1].Serial, "--code", strings.ToLower(codes[m.Gateways[1].Serial]))
	if err != nil || !strings.Contains(o, m.Gateways[1].Serial) {
		t.Errorf("claim with the code typed in lower case: %v\n%s", err, o)
	}
}

// TestFactoryCommandsRefuseBadUsage: missing flags are usage errors,
// found before any request.
func TestFactoryCommandsRefuseBadUsage(t *testing.T) {
	a := startAdminNode(t)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{name: "provision without --out", args: []string{"factory", "provision", "--count", "1", "--model", "TSGW06"}},
		{name: "provision without --count", args: []string{"factory", "provision", "--model", "TSGW06", "--out", t.TempDir()}},
		{name: "claim without --serial", args: []string{"gateway", "claim", "--tenant", "x", "--code", "C"}},
		{name: "claim without a code", args: []string{"gateway", "claim", "--tenant", "x", "--serial", "TSGW06AAA00000001"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := a.op(t, tc.args...); !errors.Is(err, errUsage) {
				t.Errorf("got %v, want a usage error", err)
			}
		})
	}
}
