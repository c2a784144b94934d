package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/gateway"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// adminNode is a running dev node and the files the CLI needs to reach it.
type adminNode struct {
	n       *node.Node
	server  string // https://127.0.0.1:port
	caFile  string
	keyFile string
}

func startAdminNode(t *testing.T) *adminNode {
	t.Helper()
	n := nodetest.Start(t, nil)
	dir := t.TempDir()
	a := &adminNode{n: n, server: "https://" + n.APIAddr(), caFile: filepath.Join(dir, "ca.pem"), keyFile: filepath.Join(dir, "operator.key")}
	if err := os.WriteFile(a.caFile, n.ServerCAPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(a.keyFile, []byte(n.OperatorKey()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return a
}

// cli runs iotransit with args and nothing else; it checks that no output
// shows the operator key.
func (a *adminNode) cli(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second*tu.Slowdown())
	defer cancel()
	err = run(ctx, args, &out, &errb)
	all := out.String() + errb.String()
	if err != nil {
		all += err.Error()
	}
	if strings.Contains(all, a.n.OperatorKey()) {
		t.Fatalf("iotransit %s printed the operator key", strings.Join(args, " "))
	}
	return out.String(), errb.String(), err
}

// op runs iotransit as the operator against the node.
func (a *adminNode) op(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return a.cli(t, append(args, "--server", a.server, "--ca", a.caFile, "--key-file", a.keyFile)...)
}

// mustOp runs iotransit as the operator and fails the test on an error.
func (a *adminNode) mustOp(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := a.op(t, args...)
	if err != nil {
		t.Fatalf("iotransit %s: %v\nstderr: %s", strings.Join(args, " "), err, errOut)
	}
	return out
}

// mustJSON runs iotransit as the operator with -o json and decodes stdout.
func (a *adminNode) mustJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out := a.mustOp(t, append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("iotransit %s -o json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// requestIDPattern is how a refusal ends: the API's request id.
var requestIDPattern = regexp.MustCompile(`\(request [0-9a-f]{24}\)$`)

// wantProblem checks err is a refusal with code, printed with its request id.
func wantProblem(t *testing.T, err error, code string) {
	t.Helper()
	var pe *client.Problem
	if !errors.As(err, &pe) || pe.Code != code {
		t.Fatalf("error %v: want a problem with code %s", err, code)
	}
	if !strings.HasPrefix(err.Error(), code+": ") || !requestIDPattern.MatchString(err.Error()) {
		t.Fatalf("error %q: want %q, its title and its request id", err, code)
	}
}

func wantLines(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Fatalf("output lacks %q:\n%s", w, out)
		}
	}
}

// tableRow returns the fields of the first line of out that starts with first.
func tableRow(t *testing.T, out, first string) []string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == first {
			return f
		}
	}
	t.Fatalf("no row %s in:\n%s", first, out)
	return nil
}

func TestAdminTenantAndGatewayLifecycle(t *testing.T) {
	a := startAdminNode(t)
	const serial = "TSGW06ACME0000001"

	out := a.mustOp(t, "tenant", "create", "acme")
	wantLines(t, out, "ID", "CREATED")
	tableRow(t, out, "acme")

	out = a.mustOp(t, "tenant", "list")
	tableRow(t, out, "acme")
	tableRow(t, out, node.DevTenant)
	var tenants struct {
		Items []struct {
			ID     string `json:"id"`
			CACert string `json:"caCert"`
		}
	}
	a.mustJSON(t, &tenants, "tenant", "list")
	if len(tenants.Items) != 2 || !strings.Contains(tenants.Items[0].CACert+tenants.Items[1].CACert, "BEGIN CERTIFICATE") {
		t.Fatalf("tenant list -o json: %+v", tenants)
	}

	_, _, err := a.op(t, "tenant", "create", "acme")
	wantProblem(t, err, "registry.tenant_exists")

	// Flags may follow the serial, and labels repeat.
	out = a.mustOp(t, "gateway", "register", serial, "--tenant", "acme", "--label", "site=hki", "--label", "floor=2")
	row := tableRow(t, out, serial)
	if strings.Join(row, " ") != serial+" active no - floor=2,site=hki" {
		t.Fatalf("register row %q", row)
	}
	wantLines(t, out, "SERIAL", "STATE", "CONNECTED", "CERT-EXPIRY", "LABELS")

	steps := []struct {
		verb, state string
	}{{"isolate", "isolated"}, {"activate", "active"}, {"isolate", "isolated"}}
	for _, s := range steps {
		out = a.mustOp(t, "gateway", s.verb, serial, "--tenant", "acme")
		if got := tableRow(t, out, serial)[1]; got != s.state {
			t.Fatalf("gateway %s: state %s, want %s", s.verb, got, s.state)
		}
	}

	out = a.mustOp(t, "gateway", "list", "--tenant", "acme", "--state", "isolated")
	tableRow(t, out, serial)
	out = a.mustOp(t, "gateway", "list", "--tenant", "acme", "--state", "active")
	if strings.Contains(out, serial) {
		t.Fatalf("gateway list --state active shows the isolated gateway:\n%s", out)
	}
	_, _, err = a.op(t, "gateway", "list", "--tenant", "acme", "--state", "asleep")
	wantProblem(t, err, "api.bad_parameter")

	var list struct {
		Items []struct {
			Serial string            `json:"serial"`
			State  string            `json:"state"`
			Labels map[string]string `json:"labels"`
		} `json:"items"`
	}
	a.mustJSON(t, &list, "gateway", "list", "--tenant", "acme")
	if len(list.Items) != 1 || list.Items[0].Serial != serial || list.Items[0].Labels["site"] != "hki" {
		t.Fatalf("gateway list -o json: %+v", list)
	}

	out = a.mustOp(t, "gateway", "revoke", serial, "--tenant", "acme")
	if got := tableRow(t, out, serial)[1]; got != "revoked" {
		t.Fatalf("gateway revoke: state %s", got)
	}
	out = a.mustOp(t, "gateway", "get", serial, "--tenant", "acme")
	wantLines(t, out, "STATE:        revoked", "TENANT:       acme", "LABELS:       floor=2,site=hki", "no certificates issued")

	out = a.mustOp(t, "gateway", "delete", serial, "--tenant", "acme")
	wantLines(t, out, "gateway "+serial+" deleted")
	_, _, err = a.op(t, "gateway", "get", serial, "--tenant", "acme")
	wantProblem(t, err, "registry.gateway_not_found")
}

func TestAdminTokenCreateThenEnroll(t *testing.T) {
	a := startAdminNode(t)
	const serial = "TSGW06ENRL0000001"
	a.mustOp(t, "gateway", "register", serial, "--tenant", node.DevTenant)

	// The table form shows the secret once, with its warning.
	out := a.mustOp(t, "token", "create", serial, "--tenant", node.DevTenant, "--ttl", "1h")
	wantLines(t, out, "TOKEN-ID", "shown only once", "iotransit enroll")
	tableRow(t, out, "TOKEN-ID")
	// The printed enroll command quotes a CA path with a space.
	spaced := filepath.Join(t.TempDir(), "my certs", "ca.pem")
	if err := os.MkdirAll(filepath.Dir(spaced), 0o755); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(a.caFile); err != nil || os.WriteFile(spaced, b, 0o644) != nil {
		t.Fatal(err)
	}
	out, _, err := a.cli(t, "token", "create", serial, "--tenant", node.DevTenant, "--server", a.server, "--key-file", a.keyFile, "--ca", spaced)
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out, "--ca '"+spaced+"'")

	var tok struct {
		Token  string `json:"token"`
		Serial string `json:"serial"`
	}
	a.mustJSON(t, &tok, "token", "create", serial, "--tenant", node.DevTenant)
	if tok.Token == "" || tok.Serial != serial {
		t.Fatalf("token create -o json: %+v", tok)
	}

	dir := filepath.Join(t.TempDir(), "gw")
	out, errOut, err := a.cli(t, "enroll", "--server", a.server, "--ca", a.caFile, "--token", tok.Token, "--serial", serial, "--out", dir)
	if err != nil {
		t.Fatalf("enroll: %v\n%s", err, errOut)
	}
	wantLines(t, out, "enrolled gateway "+serial+" of tenant dev", "v1/gw/"+serial+"/up")
	if strings.Contains(out, tok.Token) {
		t.Fatal("enroll printed the token")
	}

	st, err := os.Stat(filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key.pem mode %v, want 0600", st.Mode().Perm())
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatalf("the enrolled files do not load as a TLS key pair: %v", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}

	// The files are a working gateway identity: connect over MQTT with them
	// alone, trusting only ca.pem.
	u, err := nodetest.Dial(t, a.n, &cert, serial, func(c *gateway.UplinkConfig) {
		c.TLS = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1"}
	})
	if err != nil {
		t.Fatalf("MQTT connect with the enrolled identity: %v", err)
	}
	_ = u.Close()

	out = a.mustOp(t, "gateway", "get", serial, "--tenant", node.DevTenant)
	wantLines(t, out, "CERT-SERIAL", "valid")

	// A token works once, and an existing identity is never overwritten.
	_, _, err = a.cli(t, "enroll", "--server", a.server, "--ca", a.caFile, "--token", tok.Token, "--serial", serial, "--out", t.TempDir())
	var pe *client.Problem
	if !errors.As(err, &pe) || !requestIDPattern.MatchString(err.Error()) {
		t.Fatalf("second use of a token: %v", err)
	}
	// The refusal says what to do (issue 10: error texts that say what to do).
	if pe.Code != "registry.token_used" || !strings.Contains(err.Error(), "iotransit token create") {
		t.Errorf("second use of a token does not say how to get a new one: %v", err)
	}
	_, _, err = a.cli(t, "enroll", "--server", a.server, "--ca", a.caFile, "--token", tok.Token, "--serial", serial, "--out", dir)
	if err == nil || !strings.Contains(err.Error(), "will not overwrite") {
		t.Fatalf("enroll into a used directory: %v", err)
	}
}

func TestAdminAPIKeyScopes(t *testing.T) {
	a := startAdminNode(t)
	dev := "--tenant=" + node.DevTenant

	out := a.mustOp(t, "apikey", "create", dev, "--scope", "gateways:read", "--name", "ci", "--ttl", "24h")
	wantLines(t, out, "API key (shown only once", "itk_")
	if row := tableRow(t, out, "ID"); strings.Join(row, " ") != "ID NAME SCOPES EXPIRES LAST-USED REVOKED" {
		t.Fatalf("apikey header %q", row)
	}

	var key struct {
		Key    string   `json:"key"`
		ID     string   `json:"id"`
		Scopes []string `json:"scopes"`
	}
	a.mustJSON(t, &key, "apikey", "create", dev, "--scope", "gateways:read", "--scope", "messages:read", "--name", "reader")
	if key.Key == "" || key.ID == "" || len(key.Scopes) != 2 {
		t.Fatalf("apikey create -o json: %+v", key)
	}

	out = a.mustOp(t, "apikey", "list", dev)
	row := tableRow(t, out, key.ID)
	if strings.Join(row[1:], " ") != "reader gateways:read,messages:read never - -" {
		t.Fatalf("apikey list row %q", row)
	}
	if strings.Contains(out, key.Key) {
		t.Fatal("apikey list shows a secret")
	}

	asKey := func(args ...string) (string, error) {
		out, _, err := a.cli(t, append(args, "--server", a.server, "--ca", a.caFile, "--key", key.Key, dev)...)
		return out, err
	}
	out, err := asKey("gateway", "list")
	if err != nil {
		t.Fatalf("gateway list with a gateways:read key: %v", err)
	}
	tableRow(t, out, node.DevGateway)

	_, err = asKey("audit", "list")
	wantProblem(t, err, "api.scope_missing")
	if !strings.Contains(err.Error(), "audit:read") {
		t.Fatalf("scope refusal does not name the scope: %v", err)
	}
	_, err = asKey("apikey", "create", "--scope", "messages:read")
	wantProblem(t, err, "api.scope_missing")

	out = a.mustOp(t, "apikey", "revoke", key.ID, dev)
	if row := tableRow(t, out, key.ID); row[len(row)-1] == "-" {
		t.Fatalf("revoked key shows no revocation time: %q", row)
	}
	_, err = asKey("gateway", "list")
	wantProblem(t, err, "api.unauthenticated")

	_, _, err = a.op(t, "apikey", "create", dev)
	if !errors.Is(err, errUsage) {
		t.Fatalf("apikey create without --scope: %v", err)
	}
}

func TestAdminAuditListAndVerify(t *testing.T) {
	a := startAdminNode(t)
	const serial = "TSGW06AUDT0000001"
	a.mustOp(t, "tenant", "create", "audited")
	a.mustOp(t, "gateway", "register", serial, "--tenant", "audited")
	a.mustOp(t, "gateway", "isolate", serial, "--tenant", "audited")
	a.mustOp(t, "gateway", "activate", serial, "--tenant", "audited")

	out := a.mustOp(t, "audit", "list", "--tenant", "audited")
	if row := tableRow(t, out, "SEQ"); strings.Join(row, " ") != "SEQ TIME ACTOR ACTION TARGET OUTCOME" {
		t.Fatalf("audit header %q", row)
	}
	for _, action := range []string{"registry.tenant.create", "registry.gateway.register", "registry.gateway.isolate", "registry.gateway.activate"} {
		wantLines(t, out, action)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if f := strings.Fields(lines[1]); f[3] != "registry.gateway.activate" || f[2] != "operator" || f[4] != "gateway:"+serial || f[5] != "ok" {
		t.Fatalf("newest entry %q", f)
	}

	var page struct {
		Items []struct {
			Seq    uint64 `json:"seq"`
			Action string `json:"action"`
			Hash   string `json:"hash"`
		} `json:"items"`
	}
	a.mustJSON(t, &page, "audit", "list", "--tenant", "audited", "--action", "registry.gateway.isolate", "--from", "1h", "--order", "oldest")
	if len(page.Items) != 1 || page.Items[0].Action != "registry.gateway.isolate" || len(page.Items[0].Hash) != 64 {
		t.Fatalf("audit list --action -o json: %+v", page)
	}
	a.mustJSON(t, &page, "audit", "list", "--tenant", "audited", "--to", "2000-01-01T00:00:00Z")
	if len(page.Items) != 0 {
		t.Fatalf("audit list --to 2000: %+v", page)
	}

	out, errOut, err := a.op(t, "audit", "list", "--tenant", "audited", "--limit", "2", "--order", "oldest")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(strings.Split(strings.TrimSpace(out), "\n")); n != 3 || !strings.Contains(errOut, "--cursor") {
		t.Fatalf("audit list --limit 2: %d lines, stderr %q", n, errOut)
	}

	out = a.mustOp(t, "audit", "verify", "--tenant", "audited")
	wantLines(t, out, "OK: the audit log of tenant audited verifies", "entries:")
	var rep struct {
		OK      bool   `json:"ok"`
		Entries uint64 `json:"entries"`
	}
	a.mustJSON(t, &rep, "audit", "verify", "--tenant", "audited")
	if !rep.OK || rep.Entries < 4 {
		t.Fatalf("audit verify -o json: %+v", rep)
	}

	_, _, err = a.op(t, "audit", "list", "--tenant", "audited", "--order", "sideways")
	if !errors.Is(err, errUsage) {
		t.Fatalf("--order sideways: %v", err)
	}

	// Forge an entry straight into the tenant's audit stream: the next one
	// in line, with a hash that does not match. verify must say BROKEN and
	// fail.
	var newest struct {
		Items []map[string]any `json:"items"`
	}
	a.mustJSON(t, &newest, "audit", "list", "--tenant", "audited", "--limit", "1")
	forged := newest.Items[0]
	seq := uint64(forged["seq"].(float64)) + 1
	forged["seq"], forged["prev"], forged["outcome"] = seq, forged["hash"], "forged"
	data, err := json.Marshal(forged)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.n.JetStream().Publish(context.Background(), "audit.audited.entry", data); err != nil {
		t.Fatal(err)
	}
	out, _, err = a.op(t, "audit", "verify", "--tenant", "audited")
	if !errors.Is(err, errAuditBroken) {
		t.Fatalf("verify of a forged log: %v\n%s", err, out)
	}
	wantLines(t, out, "BROKEN: the audit log of tenant audited does not verify", "problem:")
	if row := tableRow(t, out, "first"); row[len(row)-1] != strconv.FormatUint(seq, 10) {
		t.Fatalf("first broken entry: %q, want %d", row, seq)
	}
	_, _, err = a.op(t, "audit", "verify", "--tenant", "audited", "-o", "json")
	if !errors.Is(err, errAuditBroken) {
		t.Fatalf("verify -o json of a forged log: %v", err)
	}
}

func TestAdminErrorsAreClear(t *testing.T) {
	a := startAdminNode(t)
	dev := "--tenant=" + node.DevTenant

	t.Run("wrong key", func(t *testing.T) {
		_, _, err := a.cli(t, "gateway", "list", dev, "--server", a.server, "--ca", a.caFile, "--key", "itop_not-the-operator-key-at-all-000000")
		wantProblem(t, err, "api.unauthenticated")
		if strings.Contains(err.Error(), "itop_not") {
			t.Fatal("the error shows the credential")
		}
	})
	t.Run("unknown tenant", func(t *testing.T) {
		_, _, err := a.op(t, "gateway", "list", "--tenant", "nosuch")
		wantProblem(t, err, "registry.tenant_not_found")
	})
	t.Run("tenant commands need the operator", func(t *testing.T) {
		var key struct{ Key string }
		a.mustJSON(t, &key, "apikey", "create", dev, "--scope", "keys:read")
		_, _, err := a.cli(t, "tenant", "list", "--server", a.server, "--ca", a.caFile, "--key", key.Key)
		wantProblem(t, err, "api.operator_only")
	})
	t.Run("server down", func(t *testing.T) {
		_, _, err := a.cli(t, "gateway", "list", dev, "--server", fmt.Sprintf("https://127.0.0.1:%d", tu.FreePort(t)), "--ca", a.caFile, "--key-file", a.keyFile)
		if err == nil || !strings.Contains(err.Error(), "cannot connect to the server at 127.0.0.1:") {
			t.Fatalf("server down: %v", err)
		}
	})
	t.Run("server not trusted", func(t *testing.T) {
		_, _, err := a.cli(t, "gateway", "list", dev, "--server", a.server, "--key-file", a.keyFile)
		if err == nil || !strings.Contains(err.Error(), "not signed by a trusted CA") {
			t.Fatalf("no --ca: %v", err)
		}
	})
	t.Run("plain http refused", func(t *testing.T) {
		_, _, err := a.cli(t, "gateway", "list", dev, "--server", "http://"+a.n.APIAddr(), "--ca", a.caFile, "--key-file", a.keyFile)
		if err == nil || !strings.Contains(err.Error(), "only https") {
			t.Fatalf("http server: %v", err)
		}
	})
	t.Run("missing tenant", func(t *testing.T) {
		t.Setenv("IOTRANSIT_TENANT", "")
		_, _, err := a.op(t, "gateway", "list")
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "--tenant") {
			t.Fatalf("missing --tenant: %v", err)
		}
	})
	t.Run("missing credential", func(t *testing.T) {
		_, _, err := a.cli(t, "tenant", "list", "--server", a.server, "--ca", a.caFile)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "--key-file") {
			t.Fatalf("no credential: %v", err)
		}
	})
	t.Run("wrong argument count", func(t *testing.T) {
		_, _, err := a.op(t, "gateway", "get", dev)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "<serial>") {
			t.Fatalf("gateway get without a serial: %v", err)
		}
	})
	t.Run("unknown subcommand", func(t *testing.T) {
		_, errOut, err := a.cli(t, "gateway", "frobnicate")
		if err == nil || !strings.Contains(err.Error(), `unknown gateway command "frobnicate"`) {
			t.Fatalf("unknown subcommand: %v", err)
		}
		wantLines(t, errOut, "iotransit gateway register <serial>")
	})
	t.Run("help lists subcommands", func(t *testing.T) {
		out, _, err := a.cli(t, "gateway", "-h")
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []string{"register", "list", "get", "isolate", "activate", "revoke", "delete"} {
			wantLines(t, out, "iotransit gateway "+c)
		}
		_, _, err = a.cli(t, "gateway")
		if !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("gateway without a command: %v", err)
		}
	})
}

func TestAdminFlagsFromEnvironment(t *testing.T) {
	a := startAdminNode(t)
	t.Setenv("IOTRANSIT_SERVER", a.server)
	t.Setenv("IOTRANSIT_CA", a.caFile)
	t.Setenv("IOTRANSIT_KEY", a.n.OperatorKey())
	t.Setenv("IOTRANSIT_TENANT", node.DevTenant)

	out, _, err := a.cli(t, "gateway", "list")
	if err != nil {
		t.Fatal(err)
	}
	tableRow(t, out, node.DevGateway)

	// A flag on the command line beats the environment.
	_, _, err = a.cli(t, "gateway", "list", "--key", "itk_wrong")
	wantProblem(t, err, "api.unauthenticated")
	if _, _, err = a.cli(t, "gateway", "list", "--key-file", a.keyFile); err != nil {
		t.Fatalf("--key-file over IOTRANSIT_KEY: %v", err)
	}

	t.Setenv("IOTRANSIT_KEY", "")
	t.Setenv("IOTRANSIT_KEY_FILE", a.keyFile)
	if _, _, err = a.cli(t, "tenant", "list"); err != nil {
		t.Fatalf("IOTRANSIT_KEY_FILE: %v", err)
	}
}

// TestAdminBinaryPrintsProblem runs the built binary: a refusal is one line
// on stderr with the code, the message and the request id, and the exit
// status is not zero.
func TestAdminBinaryPrintsProblem(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	a := startAdminNode(t)
	cmd := exec.Command(bin, "gateway", "list", "--tenant", "nosuch", "--server", a.server, "--ca", a.caFile, "--key-file", a.keyFile)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("exit: %v", err)
	}
	line := regexp.MustCompile(`^iotransit: registry\.tenant_not_found: no such tenant \(request [0-9a-f]{24}\)\n$`)
	if !line.MatchString(stderr.String()) || stdout.Len() != 0 {
		t.Fatalf("stdout %q, stderr %q", stdout.String(), stderr.String())
	}
}

func TestAdminParseServerURL(t *testing.T) {
	tests := []struct {
		name, in, want, err string
	}{
		{name: "https", in: "https://iot.example.com:8443", want: "https://iot.example.com:8443"},
		{name: "no scheme", in: "localhost:8443", want: "https://localhost:8443"},
		{name: "path prefix", in: "https://example.com/iot/", want: "https://example.com/iot"},
		{name: "http refused", in: "http://localhost:8443", err: "only https"},
		{name: "user info refused", in: "https://u:p@localhost", err: "only scheme"},
		{name: "empty", in: " ", err: "--server is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := parseServerURL(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				if strings.Contains(err.Error(), ":p@") {
					t.Fatal("the error shows the password")
				}
				return
			}
			if err != nil || u.String() != tc.want {
				t.Fatalf("got %v, %v; want %s", u, err, tc.want)
			}
		})
	}
}

func TestAdminFlagsMixWithArguments(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		pos    []string
		labels string
	}{
		{name: "flags after", args: []string{"S1", "--label", "a=1", "--label", "b=2"}, pos: []string{"S1"}, labels: "a=1,b=2"},
		{name: "flags before", args: []string{"--label=a=1", "S1"}, pos: []string{"S1"}, labels: "a=1"},
		{name: "double dash", args: []string{"--label", "a=1", "--", "--label", "x"}, pos: []string{"--label", "x"}, labels: "a=1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			labels := labelFlag{}
			fs.Var(labels, "label", "")
			pos, onCmdLine, err := parseArgs(fs, tc.args)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(pos, " ") != strings.Join(tc.pos, " ") || fmtLabels(labels) != tc.labels || !onCmdLine["label"] {
				t.Fatalf("positional %q, labels %q", pos, fmtLabels(labels))
			}
		})
	}
}
