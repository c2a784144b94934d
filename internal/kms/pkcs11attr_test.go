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

// TestKMSPKCS11RefusesAPublicKey: a root key found in the token that is
// not private (CKA_PRIVATE false: usable in a session that never logged in
// with the PIN, and kept unencrypted by SoftHSM2) is refused, though it is
// sensitive and never extractable.
func TestKMSPKCS11RefusesAPublicKey(t *testing.T) {
	module, pin := testutil.SoftHSMTokens(t, "kms-pub")
	ctx, err := crypto11.Configure(&crypto11.Config{Path: module, TokenLabel: "kms-pub", Pin: testutil.SoftHSMPIN})
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := crypto11.NewAttributeSetWithIDAndLabel([]byte("pub-root"), []byte("public"))
	if err != nil {
		t.Fatal(err)
	}
	for a, v := range map[crypto11.AttributeType]bool{
		crypto11.CkaPrivate: false, crypto11.CkaSensitive: true, crypto11.CkaExtractable: false,
	} {
		if err := tmpl.Set(a, v); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ctx.GenerateSecretKeyWithAttributes(tmpl, 256, crypto11.CipherAES); err != nil {
		t.Fatal(err)
	}
	if err := ctx.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := kms.OpenPKCS11Root(kms.PKCS11Config{Module: module, Token: "kms-pub", PINFile: pin, KeyLabel: "public"}, false)
	if err == nil {
		r.Close()
		t.Fatal("a public (CKA_PRIVATE false) root key was accepted")
	}
	if !strings.Contains(err.Error(), "public") {
		t.Fatalf("%v does not name the key", err)
	}
}

// TestKMSPKCS11RefusesAShortKey: a root key found in the token that is an
// AES key shorter than AES-256 is refused, though kept as it should be.
func TestKMSPKCS11RefusesAShortKey(t *testing.T) {
	module, pin := testutil.SoftHSMTokens(t, "kms-short")
	ctx, err := crypto11.Configure(&crypto11.Config{Path: module, TokenLabel: "kms-short", Pin: testutil.SoftHSMPIN})
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := crypto11.NewAttributeSetWithIDAndLabel([]byte("short-root"), []byte("short"))
	if err != nil {
		t.Fatal(err)
	}
	for a, v := range map[crypto11.AttributeType]bool{
		crypto11.CkaPrivate: true, crypto11.CkaSensitive: true, crypto11.CkaExtractable: false,
	} {
		if err := tmpl.Set(a, v); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ctx.GenerateSecretKeyWithAttributes(tmpl, 128, crypto11.CipherAES); err != nil {
		t.Fatal(err)
	}
	if err := ctx.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := kms.OpenPKCS11Root(kms.PKCS11Config{Module: module, Token: "kms-short", PINFile: pin, KeyLabel: "short"}, false)
	if err == nil {
		r.Close()
		t.Fatal("an AES-128 root key was accepted")
	}
	if !strings.Contains(err.Error(), "short") {
		t.Fatalf("%v does not name the key", err)
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
