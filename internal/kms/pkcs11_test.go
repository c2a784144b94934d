//go:build cgo

package kms_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/testutil"
)

// openToken opens the root key in a SoftHSM2 token, closed when the test
// ends.
func openToken(t *testing.T, cfg kms.PKCS11Config, create bool) *kms.PKCS11Root {
	t.Helper()
	r, err := kms.OpenPKCS11Root(cfg, create)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestKMSPKCS11Root: the root key is generated in the token at first
// open, found again by label afterwards, wraps and unwraps there, and a
// token without the key is ErrNoRootKey when it may not be made.
func TestKMSPKCS11Root(t *testing.T) {
	ctx := context.Background()
	module, pin := testutil.SoftHSMTokens(t, "kms-a")
	cfg := kms.PKCS11Config{Module: module, Token: "kms-a", PINFile: pin}
	if _, err := kms.OpenPKCS11Root(cfg, false); !errors.Is(err, kms.ErrNoRootKey) {
		t.Fatalf("open without a key: %v, want ErrNoRootKey", err)
	}
	r := openToken(t, cfg, true)
	if !strings.HasPrefix(r.ID(), "pkcs11:") {
		t.Fatalf("id %q", r.ID())
	}
	wrapped, err := r.Wrap(ctx, []byte("data key"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	again := openToken(t, cfg, false)
	if again.ID() != r.ID() {
		t.Fatalf("reopened key %s, want %s", again.ID(), r.ID())
	}
	if got, err := again.Unwrap(ctx, wrapped, []byte("aad")); err != nil || string(got) != "data key" {
		t.Fatalf("unwrap: %q, %v", got, err)
	}
	if _, err := again.Unwrap(ctx, wrapped, []byte("other")); err == nil {
		t.Fatal("unwrapped with another aad")
	}
	other := openToken(t, kms.PKCS11Config{Module: module, Token: "kms-a", PINFile: pin, KeyLabel: "another"}, true)
	if other.ID() == r.ID() {
		t.Fatal("two token keys share an id")
	}
	k := kms.NewKeyring(newMemStore(), r)
	if err := k.CheckRoot(ctx); err != nil {
		t.Fatal(err)
	}
	if err := kms.NewKeyring(k.Store(), other).CheckRoot(ctx); !errors.Is(err, kms.ErrWrongRoot) || !strings.Contains(err.Error(), r.ID()) {
		t.Fatalf("another token key: %v, want ErrWrongRoot naming %s", err, r.ID())
	}
}

// TestKMSPKCS11Errors: each bad setting is refused with an error that
// names it.
func TestKMSPKCS11Errors(t *testing.T) {
	module, pin := testutil.SoftHSMTokens(t, "kms-b")
	badPIN := testutil.SoftHSMWrongPINFile(t)
	for _, tc := range []struct {
		name    string
		cfg     kms.PKCS11Config
		wantErr error
		want    string
	}{
		{name: "wrong PIN", cfg: kms.PKCS11Config{Module: module, Token: "kms-b", PINFile: badPIN}, wantErr: kms.ErrWrongPIN},
		{name: "token not found", cfg: kms.PKCS11Config{Module: module, Token: "nope", PINFile: pin}, wantErr: kms.ErrTokenNotFound},
		{name: "missing module", cfg: kms.PKCS11Config{Module: "/nonexistent/libpkcs11.so", Token: "kms-b", PINFile: pin}, want: "/nonexistent/libpkcs11.so"},
		{name: "missing PIN file", cfg: kms.PKCS11Config{Module: module, Token: "kms-b", PINFile: "/nonexistent/pin"}, want: "PIN file"},
		{name: "no settings", cfg: kms.PKCS11Config{}, want: "--pkcs11-module"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := kms.OpenPKCS11Root(tc.cfg, true)
			if err == nil {
				r.Close()
				t.Fatal("opened")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("%v, want %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v does not name %q", err, tc.want)
			}
			if strings.Contains(err.Error(), testutil.SoftHSMPIN) {
				t.Fatalf("%v shows the PIN", err)
			}
		})
	}
}

// TestKMSPKCS11RewrapFromFile moves every wrapped key from a file root to
// a root in a SoftHSM2 token.
func TestKMSPKCS11RewrapFromFile(t *testing.T) {
	module, pin := testutil.SoftHSMTokens(t, "kms-c")
	testRewrap(t, openToken(t, kms.PKCS11Config{Module: module, Token: "kms-c", PINFile: pin}, true))
}
