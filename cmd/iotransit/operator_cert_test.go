package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestOperatorCertFlags: against a node whose admin listener asks for
// operators' certificates, an operator command works with --operator-cert
// and --operator-cert-key (or their variables) and fails without them; one
// without the other is a usage error.
func TestOperatorCertFlags(t *testing.T) {
	now := time.Now()
	ca, err := pki.NewCA("operators", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile := write("operators-ca.pem", ca.CertPEM)
	kp, err := ca.IssueClientKeyPair("bootstrap", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := pki.KeyPairPEM(kp)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := write("op.pem", certPEM), write("op.key", keyPEM)
	n := nodetest.Start(t, func(c *node.Config) { c.AdminAddr, c.AdminClientCAFile = "127.0.0.1:0", caFile })
	a := &adminNode{n: n, server: "https://" + n.AdminAddr(), caFile: write("server-ca.pem", n.ServerCAPEM()), keyFile: write("operator.key", []byte(n.OperatorKey()+"\n"))}

	out := a.mustOp(t, "tenant", "list", "--operator-cert", certFile, "--operator-cert-key", keyFile)
	if !strings.Contains(out, "dev") {
		t.Errorf("tenant list with the certificate: %q", out)
	}
	t.Setenv("IOTRANSIT_OPERATOR_CERT", certFile)
	t.Setenv("IOTRANSIT_OPERATOR_CERT_KEY", keyFile)
	a.mustOp(t, "tenant", "list")
	t.Setenv("IOTRANSIT_OPERATOR_CERT", "")
	t.Setenv("IOTRANSIT_OPERATOR_CERT_KEY", "")
	if _, _, err := a.op(t, "tenant", "list"); err == nil {
		t.Error("tenant list without a certificate worked")
	}
	if _, _, err := a.op(t, "tenant", "list", "--operator-cert", certFile); err == nil || !strings.Contains(err.Error(), "go together") {
		t.Errorf("--operator-cert alone: %v", err)
	}
}
