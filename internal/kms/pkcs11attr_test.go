//go:build cgo

package kms_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ThalesGroup/crypto11"

	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/testutil"
)

// tokenKey generates an AES key of bits in the token, sensitive and never
// extractable, private or not, as another program than the node could.
func tokenKey(t *testing.T, module, token, label string, bits int, private bool) {
	t.Helper()
	ctx, err := crypto11.Configure(&crypto11.Config{Path: module, TokenLabel: token, Pin: testutil.SoftHSMPIN})
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := crypto11.NewAttributeSetWithIDAndLabel([]byte(label+"-id"), []byte(label))
	if err != nil {
		t.Fatal(err)
	}
	for a, v := range map[crypto11.AttributeType]bool{
		crypto11.CkaPrivate: private, crypto11.CkaSensitive: true, crypto11.CkaExtractable: false,
	} {
		if err := tmpl.Set(a, v); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ctx.GenerateSecretKeyWithAttributes(tmpl, bits, crypto11.CipherAES); err != nil {
		t.Fatal(err)
	}
	if err := ctx.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestKMSPKCS11RefusesAWeakKey: a root key found in the token that is
// sensitive and never extractable is still refused when it is not private
// (CKA_PRIVATE false: usable in a session that never logged in with the
// PIN, and kept unencrypted by SoftHSM2) or shorter than AES-256; the
// error names the key.
func TestKMSPKCS11RefusesAWeakKey(t *testing.T) {
	module, pin := testutil.SoftHSMTokens(t, "kms-weak")
	for _, tc := range []struct {
		name    string
		bits    int
		private bool
	}{
		{name: "public", bits: 256, private: false},
		{name: "aes128", bits: 128, private: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tokenKey(t, module, "kms-weak", tc.name, tc.bits, tc.private)
			r, err := kms.OpenPKCS11Root(kms.PKCS11Config{Module: module, Token: "kms-weak", PINFile: pin, KeyLabel: tc.name}, false)
			if err == nil {
				r.Close()
				t.Fatalf("the %s root key was accepted", tc.name)
			}
			if !strings.Contains(err.Error(), tc.name) {
				t.Fatalf("%v does not name the key", err)
			}
		})
	}
}

// TestKMSPKCS11RefusesASharedPINFile: a PIN file that group or others may
// read is refused, and the error does not show the PIN.
func TestKMSPKCS11RefusesASharedPINFile(t *testing.T) {
	module, _ := testutil.SoftHSMTokens(t, "kms-pin")
	for _, mode := range []os.FileMode{0o640, 0o604} {
		shared := filepath.Join(t.TempDir(), "pin")
		if err := os.WriteFile(shared, []byte(testutil.SoftHSMPIN), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(shared, mode); err != nil {
			t.Fatal(err)
		}
		r, err := kms.OpenPKCS11Root(kms.PKCS11Config{Module: module, Token: "kms-pin", PINFile: shared}, true)
		if err == nil {
			r.Close()
			t.Fatalf("a PIN file of mode %v was accepted", mode)
		}
		if strings.Contains(err.Error(), testutil.SoftHSMPIN) {
			t.Fatalf("%v shows the PIN", err)
		}
	}
}
