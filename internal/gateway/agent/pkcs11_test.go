//go:build cgo

package agent_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/gateway/keystore"
	"github.com/iotransit/iotransit/internal/testutil"
	"github.com/miekg/pkcs11"
)

// softHSM makes a SoftHSM2 token of the test's own (SOFTHSM2_CONF) and
// returns the agent's PKCS#11 configuration for it. It skips without
// SoftHSM2, unless IOTRANSIT_REQUIRE_PEERS=1.
func softHSM(t *testing.T, label, pin string) keystore.PKCS11Config {
	t.Helper()
	module, util, dir := testutil.SoftHSM(t)
	cfg := keystore.PKCS11Config{Module: module, TokenLabel: label}
	if out, err := exec.Command(util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", "5678").CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util: %v: %s", err, out)
	}
	cfg.PINFile = filepath.Join(dir, "pin")
	if err := os.WriteFile(cfg.PINFile, []byte(pin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestPKCS11: with its keys in a PKCS#11 token the agent enrolls, uploads
// over mutual TLS and renews; afterwards the token holds the private keys
// as sensitive and not extractable (their value cannot be read even with
// the PIN), and the data directory holds no key file.
func TestPKCS11(t *testing.T) {
	p11 := softHSM(t, "iotransit-agent", "1234")
	c := newCloud(t, nil)
	const serial = "TSGW06AGT00000010"
	dir := t.TempDir()
	cfg := c.config(t, dir, serial, c.token(t, serial))
	cfg.PKCS11 = &p11
	a := start(t, cfg)
	nw := newNetwork(t, 1)
	nw.deliver(t, a.Agent)
	send(t, a.MeshAddr().String(), nw.frame(t, 2, 1, 1, 0))
	waitStored(t, c, serial, 1)
	before := a.Certificate()
	if err := a.Renew(context.Background()); err != nil {
		t.Fatalf("renewal in the token: %v", err)
	}
	if a.Certificate().SerialNumber.Cmp(before.SerialNumber) == 0 {
		t.Fatal("the certificate did not change")
	}
	send(t, a.MeshAddr().String(), nw.frame(t, 2, 1, 1, 1))
	waitStored(t, c, serial, 2)
	a.stop()

	// A restart finds its identity in the token.
	cfg = c.config(t, dir, serial, "")
	cfg.PKCS11 = &p11
	a = start(t, cfg)
	send(t, a.MeshAddr().String(), nw.frame(t, 2, 1, 1, 2))
	waitStored(t, c, serial, 3)
	a.stop()
	if _, err := os.Stat(filepath.Join(dir, "keys")); !os.IsNotExist(err) {
		t.Errorf("the data directory has a keys directory with the token in use: %v", err)
	}

	p := pkcs11.New(p11.Module)
	if err := p.Initialize(); err != nil {
		t.Fatal(err)
	}
	defer func() { p.Finalize(); p.Destroy() }()
	slots, err := p.GetSlotList(true)
	if err != nil || len(slots) == 0 {
		t.Fatalf("slots: %v", err)
	}
	sh, err := p.OpenSession(slots[0], pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Login(sh, pkcs11.CKU_USER, "1234"); err != nil {
		t.Fatal(err)
	}
	if err := p.FindObjectsInit(sh, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY)}); err != nil {
		t.Fatal(err)
	}
	keys, _, err := p.FindObjects(sh, 10)
	if err != nil {
		t.Fatal(err)
	}
	_ = p.FindObjectsFinal(sh)
	if len(keys) != 1 {
		t.Fatalf("%d private keys in the token, want the one identity key (the renewal deleted the old one)", len(keys))
	}
	attrs, err := p.GetAttributeValue(sh, keys[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil), pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil)})
	if err != nil {
		t.Fatal(err)
	}
	for _, at := range attrs {
		v := len(at.Value) == 1 && at.Value[0] != 0
		if (at.Type == pkcs11.CKA_EXTRACTABLE && v) || (at.Type == pkcs11.CKA_SENSITIVE && !v) {
			t.Errorf("identity key attribute 0x%x = %v", at.Type, v)
		}
	}
	if v, err := p.GetAttributeValue(sh, keys[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)}); err == nil {
		t.Errorf("the private key's value was read: %d bytes", len(v[0].Value))
	}
}

// TestPKCS11RenewalKeepsAUsableCertificate: a renewal destroys the old key
// in the token once the new certificate is stored; when the certificate
// cannot then be put under its name (here cert.pem is a directory), the
// renewal fails, but the agent goes on with the new certificate: the old
// one's key is gone, and a handshake with it could not be signed.
func TestPKCS11RenewalKeepsAUsableCertificate(t *testing.T) {
	p11 := softHSM(t, "iotransit-renew", "1234")
	c := newCloud(t, nil)
	const serial = "TSGW06AGT00000019"
	dir := t.TempDir()
	cfg := c.config(t, dir, serial, c.token(t, serial))
	cfg.PKCS11 = &p11
	a := start(t, cfg)
	certPath := filepath.Join(dir, "cert.pem")
	if err := os.Remove(certPath); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(certPath, "in-the-way"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := a.Renew(context.Background()); err == nil {
		t.Fatal("a renewal that could not store its certificate succeeded")
	}
	api, err := a.APIClient()
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	// The tenant has no firmware repository: a gateway the API knows gets
	// firmware.not_found; one whose handshake failed gets no answer.
	if _, err := api.GatewayTUF(context.Background(), "timestamp.json", 1<<20); err == nil || !strings.Contains(err.Error(), "firmware.not_found") {
		t.Fatalf("after the failed renewal: %v, want firmware.not_found (a working client certificate)", err)
	}
}
