package kms

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"
)

// TestKMSSealFormatIsStable pins the sealed format independently of Seal
// and Open: magic, key version, subkey id, nonce, then AES-GCM under the
// derived subkey with the associated data header ‖ tenant ‖ 0 ‖ aad. Values
// stored before the one-buffer Seal (issue 11) must still open, and values
// sealed now must open with the format as first written.
func TestKMSSealFormatIsStable(t *testing.T) {
	ctx := context.Background()
	root := make([]byte, RootKeySize)
	if _, err := rand.Read(root); err != nil {
		t.Fatal(err)
	}
	k, err := New(root, mapStore{})
	if err != nil {
		t.Fatal(err)
	}
	if err := k.EnsureTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	dek, err := k.dek(ctx, "acme", 1)
	if err != nil {
		t.Fatal(err)
	}
	refAAD := func(header []byte, aad string) []byte {
		return append(append(append(bytes.Clone(header), "acme"...), 0), aad...)
	}
	for _, tc := range []struct {
		name, plaintext, aad string
	}{
		{name: "message", plaintext: `{"tsmId":12100,"temp":21.3}`, aad: "425e9fcb489d2a56acd279665351073b"},
		{name: "empty aad", plaintext: "x", aad: ""},
		{name: "long aad", plaintext: "y", aad: string(bytes.Repeat([]byte("a"), 300))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Sealed now, opened by the format.
			sealed, err := k.Seal(ctx, "acme", []byte(tc.plaintext), []byte(tc.aad))
			if err != nil {
				t.Fatal(err)
			}
			if sealed[0] != sealMagic || len(sealed) != sealHeaderLen+nonceLen+len(tc.plaintext)+16 {
				t.Fatalf("sealed value of %d bytes, magic %#x", len(sealed), sealed[0])
			}
			a, err := deriveSubkey(dek, "acme", sealed[headerLen:sealHeaderLen])
			if err != nil {
				t.Fatal(err)
			}
			body := sealed[sealHeaderLen:]
			got, err := a.Open(nil, body[:nonceLen], body[nonceLen:], refAAD(sealed[:sealHeaderLen], tc.aad))
			if err != nil || string(got) != tc.plaintext {
				t.Fatalf("the format opens %q, %v; want %q", got, err, tc.plaintext)
			}
			// Sealed by the format (a fresh nonce), opened now.
			again := bytes.Clone(sealed[:sealHeaderLen+nonceLen])
			if _, err := rand.Read(again[sealHeaderLen:]); err != nil {
				t.Fatal(err)
			}
			again = a.Seal(again, again[sealHeaderLen:], []byte(tc.plaintext), refAAD(again[:sealHeaderLen], tc.aad))
			opened, err := k.Open(ctx, "acme", again, []byte(tc.aad))
			if err != nil || string(opened) != tc.plaintext {
				t.Fatalf("Open gives %q, %v; want %q", opened, err, tc.plaintext)
			}
			if _, err := k.Open(ctx, "acme", again, []byte(tc.aad+"x")); err == nil {
				t.Fatal("opened with another aad")
			}
		})
	}
}
