//go:build cgo

package keystore_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/gateway/keystore"
	"github.com/miekg/pkcs11"
)

// p256 is the DER OID of the P-256 curve (CKA_EC_PARAMS).
var p256 = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}

// TestKeystorePKCS11KeysCannotBeExported: with the user PIN and the
// token's own API, neither the identity key nor the wrapping key can be
// read (CKA_VALUE), made extractable or wrapped out under another key,
// while an extractable key of the same session wraps out fine.
func TestKeystorePKCS11KeysCannotBeExported(t *testing.T) {
	h := newSoftHSM(t)
	s := h.open(t)
	if _, err := s.Identity(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Seal([]byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	s.Close()

	r := h.raw(t)
	wrapper := r.sessionAESKey(t, true)
	control := r.sessionAESKey(t, true)
	if _, err := r.p.WrapKey(r.sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)}, wrapper, control); err != nil {
		t.Fatalf("control: an extractable key does not wrap out: %v", err)
	}
	for _, tc := range []struct {
		name  string
		class uint
		label string
	}{
		{name: "identity key", class: pkcs11.CKO_PRIVATE_KEY, label: "iotransit-identity"},
		{name: "wrapping key", class: pkcs11.CKO_SECRET_KEY, label: "iotransit-wrap"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := r.find(t, pkcs11.NewAttribute(pkcs11.CKA_CLASS, tc.class), pkcs11.NewAttribute(pkcs11.CKA_LABEL, tc.label))
			if len(objs) != 1 {
				t.Fatalf("%d objects labelled %s, want 1", len(objs), tc.label)
			}
			key := objs[0]
			if _, err := r.p.GetAttributeValue(r.sh, key, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)}); !errors.Is(err, pkcs11.Error(pkcs11.CKR_ATTRIBUTE_SENSITIVE)) {
				t.Errorf("read CKA_VALUE: %v, want CKR_ATTRIBUTE_SENSITIVE", err)
			}
			for _, attr := range []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
				pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, false),
			} {
				if err := r.p.SetAttributeValue(r.sh, key, []*pkcs11.Attribute{attr}); err == nil {
					t.Errorf("attribute %#x changed to allow export", attr.Type)
				}
			}
			got := r.bools(t, key, pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE, pkcs11.CKA_ALWAYS_SENSITIVE, pkcs11.CKA_NEVER_EXTRACTABLE, pkcs11.CKA_PRIVATE)
			want := map[uint]bool{pkcs11.CKA_SENSITIVE: true, pkcs11.CKA_EXTRACTABLE: false, pkcs11.CKA_ALWAYS_SENSITIVE: true, pkcs11.CKA_NEVER_EXTRACTABLE: true, pkcs11.CKA_PRIVATE: true}
			for ty, w := range want {
				if got[ty] != w {
					t.Errorf("attribute %#x is %t, want %t", ty, got[ty], w)
				}
			}
			if _, err := r.p.WrapKey(r.sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)}, wrapper, key); !errors.Is(err, pkcs11.Error(pkcs11.CKR_KEY_UNEXTRACTABLE)) {
				t.Errorf("wrap out under a session key: %v, want CKR_KEY_UNEXTRACTABLE", err)
			}
		})
	}
}

// sessionAESKey makes an AES-256 session key that may wrap (and be
// wrapped, when extractable).
func (r *rawToken) sessionAESKey(t *testing.T, extractable bool) pkcs11.ObjectHandle {
	t.Helper()
	k, err := r.p.GenerateKey(r.sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, extractable),
	})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestKeystorePKCS11RefusesKeysThatCouldLeave: a key planted on the token
// under the store's label that was imported, or generated extractable or
// not sensitive, is refused rather than used: its value may be known.
func TestKeystorePKCS11RefusesKeysThatCouldLeave(t *testing.T) {
	identity := func(s keystore.Store) error { _, err := s.Identity(); return err }
	wrapping := func(s keystore.Store) error { _, err := s.Seal([]byte("x"), nil); return err }
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, r *rawToken)
		use   func(keystore.Store) error
		want  string
	}{
		{
			name:  "identity generated extractable",
			plant: func(t *testing.T, r *rawToken) { r.ecKey(t, "iotransit-identity-0000000000000001", true, true) },
			use:   identity, want: "CKA_EXTRACTABLE=false",
		},
		{
			name:  "identity generated not sensitive",
			plant: func(t *testing.T, r *rawToken) { r.ecKey(t, "iotransit-identity-0000000000000001", false, false) },
			use:   identity, want: "CKA_SENSITIVE=true",
		},
		{
			name:  "identity with a foreign id",
			plant: func(t *testing.T, r *rawToken) { r.ecKey(t, "someone-else", true, false) },
			use:   identity, want: "foreign id",
		},
		{
			name: "wrapping key imported",
			plant: func(t *testing.T, r *rawToken) {
				_, err := r.p.CreateObject(r.sh, append(wrapTemplate(), pkcs11.NewAttribute(pkcs11.CKA_VALUE, make([]byte, 32))))
				if err != nil {
					t.Fatal(err)
				}
			},
			use: wrapping, want: "CKA_ALWAYS_SENSITIVE=true",
		},
		{
			name: "wrapping key generated extractable",
			plant: func(t *testing.T, r *rawToken) {
				tmpl := append(wrapTemplate(), pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32))
				tmpl[len(tmpl)-2] = pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true)
				if _, err := r.p.GenerateKey(r.sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, tmpl); err != nil {
					t.Fatal(err)
				}
			},
			use: wrapping, want: "CKA_EXTRACTABLE=false",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSoftHSM(t)
			r := h.raw(t)
			tc.plant(t, r)
			r.close()
			s := h.open(t)
			err := tc.use(s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a refusal naming %s", err, tc.want)
			}
			if err := tc.use(s); err == nil {
				t.Fatal("the second use went through: the planted key was replaced or used")
			}
		})
	}
}

// wrapTemplate is a token AES key under the wrapping key's label; its last
// attribute is CKA_EXTRACTABLE.
func wrapTemplate() []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, "iotransit-wrap"),
		pkcs11.NewAttribute(pkcs11.CKA_ID, "iotransit-wrap-1"),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
	}
}

// ecKey generates a P-256 key pair on the token under the identity label.
func (r *rawToken) ecKey(t *testing.T, id string, sensitive, extractable bool) {
	t.Helper()
	common := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, "iotransit-identity"),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}
	_, _, err := r.p.GenerateKeyPair(r.sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)},
		append(common, pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true), pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, p256)),
		append(common, pkcs11.NewAttribute(pkcs11.CKA_SIGN, true), pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, sensitive), pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, extractable)))
	if err != nil {
		t.Fatal(err)
	}
}

// TestKeystorePKCS11OpenErrors: each way of failing to open the token says
// what is wrong, names the token or the file, and never shows the PIN; the
// token then opens with the right settings.
func TestKeystorePKCS11OpenErrors(t *testing.T) {
	h := newSoftHSM(t)
	dir := t.TempDir()
	const secretPIN = "s3cret-Pin-Xq"
	pinFile := func(name, content string, mode os.FileMode) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		return path
	}
	wrongPIN := pinFile("wrong", secretPIN+"\n", 0o600)
	for _, tc := range []struct {
		name   string
		cfg    keystore.PKCS11Config
		is     error
		saying []string
	}{
		{
			name:   "wrong PIN",
			cfg:    keystore.PKCS11Config{Module: h.module, TokenLabel: testToken, PINFile: wrongPIN},
			is:     keystore.ErrWrongPIN,
			saying: []string{testToken, wrongPIN},
		},
		{
			name:   "no token with the label",
			cfg:    keystore.PKCS11Config{Module: h.module, TokenLabel: "no-such-token", PINFile: wrongPIN},
			is:     keystore.ErrTokenNotFound,
			saying: []string{`"no-such-token"`, h.module},
		},
		{
			name:   "PIN file readable by group",
			cfg:    keystore.PKCS11Config{Module: h.module, TokenLabel: testToken, PINFile: pinFile("group", secretPIN, 0o640)},
			saying: []string{"must be 0600", filepath.Join(dir, "group")},
		},
		{
			name:   "PIN file readable by others",
			cfg:    keystore.PKCS11Config{Module: h.module, TokenLabel: testToken, PINFile: pinFile("others", secretPIN, 0o604)},
			saying: []string{"must be 0600"},
		},
		{
			name:   "PIN file missing",
			cfg:    keystore.PKCS11Config{Module: h.module, TokenLabel: testToken, PINFile: filepath.Join(dir, "missing")},
			is:     os.ErrNotExist,
			saying: []string{filepath.Join(dir, "missing")},
		},
		{
			name:   "PIN file empty",
			cfg:    keystore.PKCS11Config{Module: h.module, TokenLabel: testToken, PINFile: pinFile("empty", "\n", 0o600)},
			saying: []string{"is empty"},
		},
		{
			name:   "module missing",
			cfg:    keystore.PKCS11Config{Module: filepath.Join(dir, "libnothing.so"), TokenLabel: testToken, PINFile: wrongPIN},
			saying: []string{filepath.Join(dir, "libnothing.so")},
		},
		{
			name:   "settings missing",
			cfg:    keystore.PKCS11Config{},
			saying: []string{"module path is required", "token label is required", "PIN file is required"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := keystore.OpenPKCS11(tc.cfg)
			if err == nil {
				s.Close()
				t.Fatal("opened")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			for _, w := range tc.saying {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), secretPIN) {
				t.Errorf("error %q shows the PIN", err)
			}
		})
	}
	s := h.open(t)
	if _, err := s.Identity(); err != nil {
		t.Fatalf("the token does not open after the failures: %v", err)
	}
}

// TestKeystorePKCS11TokenFailureIsNotTampering: when the token fails (here:
// the store closed under the caller), Open reports a token error, never
// ErrNotAuthentic, so that a caller does not discard a good secret as
// changed; and Seal returns the error instead of panicking.
func TestKeystorePKCS11TokenFailureIsNotTampering(t *testing.T) {
	s := newSoftHSM(t).open(t)
	sealed, err := s.Seal([]byte("queue data key"), []byte("queue"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(sealed, []byte("other")); !errors.Is(err, keystore.ErrNotAuthentic) {
		t.Fatalf("a working token: %v, want ErrNotAuthentic", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Open(sealed, []byte("queue")); err == nil || errors.Is(err, keystore.ErrNotAuthentic) || got != nil {
		t.Fatalf("open with a failed token: %q, %v; want a token error", got, err)
	}
	if got, err := s.Seal([]byte("x"), nil); err == nil || got != nil {
		t.Fatalf("seal with a failed token: %q, %v", got, err)
	}
	if _, err := s.Identity(); err == nil {
		t.Fatal("identity with a failed token")
	}
}
