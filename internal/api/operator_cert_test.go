package api_test

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// certClient is an API client of addr sending key and presenting cert.
func certClient(t *testing.T, n *node.Node, addr, key string, cert *tls.Certificate) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Server: "https://" + addr, CAPEM: n.ServerCAPEM(), Credential: key, Certificate: cert, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// TestOperatorSecondFactorOnTheAdminListener: with --admin-client-ca the
// admin listener takes only clients whose certificate that CA issued, and
// a named operator's key works only with a certificate issued to its
// name: a stolen key alone, or with another operator's certificate, is
// refused (audited under the operator tried). Tenant credentials on the
// public listener need no certificate.
func TestOperatorSecondFactorOnTheAdminListener(t *testing.T) {
	now := time.Now()
	opCA, err := pki.NewCA("operators", 24*time.Hour, now.Add(-4*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "operators-ca.pem")
	if err := os.WriteFile(caFile, opCA.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	issue := func(ca *pki.CA, cn string, validity time.Duration, at time.Time) *tls.Certificate {
		t.Helper()
		c, err := ca.IssueClientKeyPair(cn, validity, at)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	foreignCA, err := pki.NewCA("operators", 24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	n := nodetest.Start(t, func(c *node.Config) { c.AdminAddr, c.AdminClientCAFile = "127.0.0.1:0", caFile })
	ctx := context.Background()
	adm := n.AdminAddr()
	boot := certClient(t, n, adm, n.OperatorKey(), issue(opCA, "bootstrap", time.Hour, now))
	carol := createOperator(t, boot, "carol", client.RoleReadonly)

	// The TLS handshake itself refuses a client without a certificate of
	// the operators' CA.
	for name, cert := range map[string]*tls.Certificate{
		"no certificate":       nil,
		"a foreign CA's":       issue(foreignCA, "carol", time.Hour, now),
		"an expired one":       issue(opCA, "carol", time.Hour, now.Add(-3*time.Hour)),
		"a gateway's (tenant)": nodetest.Gateway(t, n, "acme", "TSGW06ACM00000901"),
	} {
		_, err := certClient(t, n, adm, carol.Key, cert).ListTenants(ctx)
		if err == nil || problemCode(err) != "" {
			t.Errorf("%s: %v, want a refused handshake", name, err)
		}
	}
	// With a certificate of the CA, the key must be of the operator named.
	if _, err := certClient(t, n, adm, carol.Key, issue(opCA, "carol", time.Hour, now)).ListTenants(ctx); err != nil {
		t.Errorf("carol with her certificate: %v", err)
	}
	if _, err := certClient(t, n, adm, carol.Key, issue(opCA, "dave", time.Hour, now)).ListTenants(ctx); problemCode(err) != "api.operator_certificate_mismatch" {
		t.Errorf("carol's key with dave's certificate: %v", err)
	}
	page, err := boot.ListAudit(ctx, "_system", client.AuditQuery{Action: "api.auth.refuse"})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Items) == 0 || page.Items[0].Actor != "operator:carol" || page.Items[0].Outcome != "api.operator_certificate_mismatch" {
		t.Errorf("the refusal in _system: %+v", page.Items)
	}
	// The public listener: tenant keys work as before, operator keys never
	// (no certificate can be verified there).
	// The operator reaches the tenant routes on the admin listener.
	k, err := boot.CreateAPIKey(ctx, "acme", client.CreateAPIKeyRequest{Scopes: []string{"gateways:read"}})
	if err != nil {
		t.Fatalf("the operator creates a tenant key on the admin listener: %v", err)
	}
	if _, err := certClient(t, n, n.APIAddr(), k.Key, nil).ListGateways(ctx, "acme", client.GatewayQuery{}); err != nil {
		t.Errorf("a tenant key on the public listener: %v", err)
	}
	if _, err := certClient(t, n, n.APIAddr(), n.OperatorKey(), nil).WhoAmI(ctx); problemCode(err) != "api.operator_certificate_required" {
		t.Errorf("the operator key on the public listener: %v", err)
	}
}

// TestAdminClientCANeedsAdminListener: the flag without --admin-addr, or
// with a file holding no certificate, stops the start.
func TestAdminClientCANeedsAdminListener(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty.pem")
	if err := os.WriteFile(empty, []byte("no pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct{ admin, file, want string }{
		"no admin listener": {"", empty, "--admin-client-ca needs --admin-addr"},
		"no certificate":    {"127.0.0.1:0", empty, "no PEM certificate"},
		"missing file":      {"127.0.0.1:0", empty + ".nope", "no such file"},
	} {
		c := node.DefaultConfig()
		c.DataDir, c.AdminAddr, c.AdminClientCAFile = t.TempDir(), tc.admin, tc.file
		c.APIAddr, c.MQTTAddr, c.ServerNames = "127.0.0.1:0", "127.0.0.1:0", []string{"127.0.0.1"}
		n, err := node.Start(context.Background(), c)
		if err == nil {
			n.Close()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}
