package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/client"
)

// operator create shows the key once; list and show never; the key works
// as the CLI's credential within its role; rotate and revoke stop the old
// key at once; retire-bootstrap is refused until an admin exists.
func TestAdminOperatorLifecycle(t *testing.T) {
	a := startAdminNode(t)
	_, _, err := a.op(t, "operator", "retire-bootstrap")
	wantProblem(t, err, "credential.operator_lockout")

	out := a.mustOp(t, "operator", "create", "--name", "metrics-bot", "--role", client.RoleMetrics, "--ttl", "24h")
	wantLines(t, out, "Operator key (shown only once", "ito_")
	if row := tableRow(t, out, "ID"); strings.Join(row, " ") != "ID NAME ROLE EXPIRES ROTATED REVOKED" {
		t.Fatalf("operator header %q", row)
	}
	_, _, err = a.op(t, "operator", "create", "--name", "x", "--role", "operator:root")
	wantProblem(t, err, "credential.role_invalid")
	if _, _, err := a.op(t, "operator", "create", "--name", "x"); err == nil || !strings.Contains(err.Error(), "--role") {
		t.Fatalf("create without --role: %v", err)
	}

	var ro client.Operator
	a.mustJSON(t, &ro, "operator", "create", "--name", "viewer", "--role", client.RoleReadonly)
	if !strings.HasPrefix(ro.Key, "ito_") || ro.Role != client.RoleReadonly {
		t.Fatalf("operator create -o json: %+v", ro)
	}
	out = a.mustOp(t, "operator", "list")
	if row := tableRow(t, out, ro.ID); strings.Join(row[1:], " ") != "viewer operator:readonly never - -" {
		t.Fatalf("operator list row %q", row)
	}
	if strings.Contains(out, ro.Key) || strings.Contains(a.mustOp(t, "operator", "show", ro.ID), ro.Key) {
		t.Fatal("operator list or show shows a key")
	}

	// The key is the CLI's credential, within its role.
	keyFile := filepath.Join(t.TempDir(), "viewer.key")
	if err := os.WriteFile(keyFile, []byte(ro.Key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	asViewer := func(args ...string) (string, error) {
		out, _, err := a.cli(t, append(args, "--server", a.server, "--ca", a.caFile, "--key-file", keyFile)...)
		return out, err
	}
	if _, err := asViewer("tenant", "list"); err != nil {
		t.Fatalf("readonly lists tenants: %v", err)
	}
	_, err = asViewer("tenant", "create", "nope")
	wantProblem(t, err, "api.operator_role")
	_, err = asViewer("messages", "list", "--tenant", "dev")
	wantProblem(t, err, "api.operator_role")

	var rot client.Operator
	a.mustJSON(t, &rot, "operator", "rotate", ro.ID)
	if rot.Key == "" || rot.Key == ro.Key || rot.RotatedAt == nil {
		t.Fatalf("rotate: %+v", rot)
	}
	_, err = asViewer("tenant", "list")
	wantProblem(t, err, "api.unauthenticated")
	if err := os.WriteFile(keyFile, []byte(rot.Key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := asViewer("tenant", "list"); err != nil {
		t.Fatalf("the rotated key: %v", err)
	}
	a.mustOp(t, "operator", "revoke", ro.ID)
	_, err = asViewer("tenant", "list")
	wantProblem(t, err, "api.unauthenticated")
}

// serve --check-config checks --admin-addr as it does the other listeners.
func TestServeCheckConfigAdminAddr(t *testing.T) {
	tests := []struct {
		name, addr, want string
	}{
		{"no port", "localhost", `--admin-addr "localhost": want HOST:PORT`},
		{"the API's", ":8443", "must differ from --api-addr"},
		{"a bad port", ":nope", `"nope" is not a port`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(context.Background(), []string{"serve", "--check-config", "--dev", "--data-dir", t.TempDir(), "--admin-addr", tc.addr}, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("--admin-addr %s: %v, want %q", tc.addr, err, tc.want)
			}
		})
	}
}
