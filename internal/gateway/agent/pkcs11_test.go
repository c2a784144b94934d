//go:build cgo

package agent_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/iotransit/iotransit/internal/gateway/keystore"
	"github.com/iotransit/iotransit/internal/testutil"
	"github.com/miekg/pkcs11"
)

// softHSMModules are where Debian and others install SoftHSM2's module.
var softHSMModules = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

// softHSM makes a SoftHSM2 token of the test's own (SOFTHSM2_CONF) and
// returns the agent's PKCS#11 configuration for it. It skips without
// SoftHSM2, unless IOTRANSIT_REQUIRE_PEERS=1.
func softHSM(t *testing.T, label, pin string) keystore.PKCS11Config {
	t.Helper()
	util := testutil.RequirePeer(t, "softhsm2-util")
	cfg := keystore.PKCS11Config{TokenLabel: label}
	for _, m := range softHSMModules {
		if _, err := os.Stat(m); err == nil {
			cfg.Module = m
			break
		}
	}
	if cfg.Module == "" {
		t.Fatalf("softhsm2-util is installed but its module is in none of %v", softHSMModules)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.Mkdir(filepath.Join(dir, "tokens"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n", dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
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
