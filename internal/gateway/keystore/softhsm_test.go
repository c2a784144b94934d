//go:build cgo

package keystore_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/iotransit/iotransit/internal/gateway/keystore"
	"github.com/iotransit/iotransit/internal/testutil"
	"github.com/miekg/pkcs11"
)

// The test token.
const (
	testToken = "iotransit-test"
	testPIN   = "1234"
	testSOPIN = "5678"
)

func init() {
	backends = append(backends, backend{name: "pkcs11", fresh: func(t *testing.T) func(t *testing.T) keystore.Store {
		return newSoftHSM(t).open
	}})
}

// softHSM is a SoftHSM2 token store of one test, with one token.
type softHSM struct {
	module  string
	util    string
	pinFile string
}

// newSoftHSM makes a token directory and configuration of the test's own
// (SOFTHSM2_CONF, so no store may be open across tests) with one token,
// iotransit-test, and a PIN file 0600. It skips the test when SoftHSM2 is
// not installed, unless IOTRANSIT_REQUIRE_PEERS=1.
func newSoftHSM(t *testing.T) *softHSM {
	t.Helper()
	module, util, dir := testutil.SoftHSM(t)
	h := &softHSM{module: module, util: util}
	h.initToken(t, testToken)
	h.pinFile = filepath.Join(dir, "pin")
	if err := os.WriteFile(h.pinFile, []byte(testPIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return h
}

// initToken initializes a free slot as a token labelled label.
func (h *softHSM) initToken(t *testing.T, label string) {
	t.Helper()
	out, err := exec.Command(h.util, "--init-token", "--free", "--label", label, "--pin", testPIN, "--so-pin", testSOPIN).CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util --init-token: %v: %s", err, out)
	}
}

// config is the store's configuration for the test token.
func (h *softHSM) config() keystore.PKCS11Config {
	return keystore.PKCS11Config{Module: h.module, TokenLabel: testToken, PINFile: h.pinFile}
}

// open opens the token store, closing it when the test ends.
func (h *softHSM) open(t *testing.T) keystore.Store {
	t.Helper()
	s, err := keystore.Open(keystore.Config{PKCS11: new(h.config())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// rawToken is a session on the test token through miekg/pkcs11 directly,
// logged in as the user: what an attacker holding the PIN (or the agent's
// process) can do with the token.
type rawToken struct {
	p      *pkcs11.Ctx
	sh     pkcs11.SessionHandle
	closed bool
}

// close finalizes the module, so that a store may open the token.
func (r *rawToken) close() {
	if !r.closed {
		r.closed = true
		r.p.Finalize()
		r.p.Destroy()
	}
}

// raw opens a rawToken. The module is initialized once per process: no
// store may be open meanwhile.
func (h *softHSM) raw(t *testing.T) *rawToken {
	t.Helper()
	p := pkcs11.New(h.module)
	if p == nil {
		t.Fatalf("load %s", h.module)
	}
	if err := p.Initialize(); err != nil {
		t.Fatal(err)
	}
	r := &rawToken{p: p}
	t.Cleanup(r.close)
	slots, err := p.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, slot := range slots {
		info, err := p.GetTokenInfo(slot)
		if err != nil || info.Label != testToken {
			continue
		}
		sh, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Login(sh, pkcs11.CKU_USER, testPIN); err != nil {
			t.Fatal(err)
		}
		r.sh = sh
		return r
	}
	t.Fatalf("no token %s", testToken)
	return nil
}

// find returns the objects matching template.
func (r *rawToken) find(t *testing.T, template ...*pkcs11.Attribute) []pkcs11.ObjectHandle {
	t.Helper()
	if err := r.p.FindObjectsInit(r.sh, template); err != nil {
		t.Fatal(err)
	}
	objs, _, err := r.p.FindObjects(r.sh, 100)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.p.FindObjectsFinal(r.sh); err != nil {
		t.Fatal(err)
	}
	return objs
}

// bools reads boolean attributes of obj.
func (r *rawToken) bools(t *testing.T, obj pkcs11.ObjectHandle, types ...uint) map[uint]bool {
	t.Helper()
	tmpl := make([]*pkcs11.Attribute, len(types))
	for i, ty := range types {
		tmpl[i] = pkcs11.NewAttribute(ty, nil)
	}
	attrs, err := r.p.GetAttributeValue(r.sh, obj, tmpl)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint]bool{}
	for _, a := range attrs {
		out[a.Type] = len(a.Value) == 1 && a.Value[0] != 0
	}
	return out
}
