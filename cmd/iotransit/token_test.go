package main

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/node"
)

// token list shows the tokens that can still enroll, --all every one with
// its state; token revoke makes a token refuse enrollment with a message
// that says what to do, and behaves like apikey revoke when repeated or
// unknown.
func TestAdminTokenListAndRevoke(t *testing.T) {
	a := startAdminNode(t)
	const serial = "TSGW06TOKN0000001"
	dev := "--tenant=" + node.DevTenant
	a.mustOp(t, "gateway", "register", serial, dev)
	create := func() client.EnrollmentToken {
		t.Helper()
		var tok client.EnrollmentToken
		a.mustJSON(t, &tok, "token", "create", serial, dev)
		return tok
	}
	enrollWith := func(tok string) error {
		t.Helper()
		_, _, err := a.cli(t, "enroll", "--server", a.server, "--ca", a.caFile, "--token", tok, "--serial", serial, "--out", filepath.Join(t.TempDir(), "gw"))
		return err
	}
	used, revoked, valid := create(), create(), create()
	if err := enrollWith(used.Token); err != nil {
		t.Fatalf("enroll: %v", err)
	}

	out := a.mustOp(t, "token", "revoke", revoked.ID, dev)
	if row := tableRow(t, out, revoked.ID); row[1] != serial || row[2] != "revoked" {
		t.Fatalf("token revoke row %q", row)
	}
	// Again: nothing changes, no error (as apikey revoke).
	var again client.EnrollmentToken
	a.mustJSON(t, &again, "token", "revoke", revoked.ID, dev)
	if again.State != client.TokenRevoked || again.RevokedAt == nil {
		t.Fatalf("token revoke again: %+v", again)
	}
	_, _, err := a.op(t, "token", "revoke", "0123456789abcdef", dev)
	wantProblem(t, err, "registry.token_not_found")

	err = enrollWith(revoked.Token)
	wantProblem(t, err, "registry.token_revoked")
	if !strings.Contains(err.Error(), "iotransit token create SERIAL") {
		t.Errorf("the refusal of a revoked token does not say what to do: %v", err)
	}

	// By default only the usable token, and a word on stderr about the rest.
	out, errOut, err := a.op(t, "token", "list", dev, "--serial", serial)
	if err != nil {
		t.Fatal(err)
	}
	if row := tableRow(t, out, "TOKEN-ID"); strings.Join(row, " ") != "TOKEN-ID SERIAL STATE CREATED EXPIRES CREATED-BY" {
		t.Fatalf("token list header %q", row)
	}
	if row := tableRow(t, out, valid.ID); row[2] != "valid" || row[5] != "operator" {
		t.Fatalf("valid token row %q", row)
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 {
		t.Fatalf("token list shows more than the valid token:\n%s", out)
	}
	if !strings.Contains(errOut, "2 used, expired or revoked token(s) not shown: add --all") {
		t.Errorf("token list stderr %q", errOut)
	}
	for _, tok := range []client.EnrollmentToken{used, revoked, valid} {
		if strings.Contains(out, tok.Token) {
			t.Fatal("token list shows a secret")
		}
	}

	// --all: every token of the serial with its state; another serial's
	// tokens are left out by --serial.
	var list client.List[client.EnrollmentToken]
	a.mustOp(t, "gateway", "register", "TSGW06TOKN0000002", dev)
	a.mustOp(t, "token", "create", "TSGW06TOKN0000002", dev)
	a.mustJSON(t, &list, "token", "list", dev, "--all", "--serial", serial)
	got := map[string]client.TokenState{}
	for _, it := range list.Items {
		got[it.ID] = it.State
	}
	want := map[string]client.TokenState{used.ID: client.TokenUsed, revoked.ID: client.TokenRevoked, valid.ID: client.TokenValid}
	if len(got) != len(want) {
		t.Fatalf("token list --all --serial: %v, want %v", got, want)
	}
	for id, st := range want {
		if got[id] != st {
			t.Errorf("token %s: %q, want %q", id, got[id], st)
		}
	}
	a.mustJSON(t, &list, "token", "list", dev)
	if len(list.Items) != 2 {
		t.Errorf("token list without --serial: %d tokens, want the 2 valid ones: %+v", len(list.Items), list.Items)
	}

	_, _, err = a.op(t, "token", "revoke", dev)
	if !errors.Is(err, errUsage) {
		t.Fatalf("token revoke without an id: %v", err)
	}

	// Revoking a used token says that its gateway stays enrolled, and how
	// to refuse the gateway: the state "revoked" alone would suggest it.
	_, errOut, err = a.op(t, "token", "revoke", used.ID, dev)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut, "iotransit gateway revoke "+serial) {
		t.Errorf("token revoke of a used token, stderr %q", errOut)
	}
}
