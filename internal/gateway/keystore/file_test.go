package keystore_test

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/gateway/keystore"
	"github.com/iotransit/iotransit/internal/pki"
)

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// TestKeystoreFileKeysArePrivate: every key file is 0600 in a 0700
// directory, the identity keys PKCS#8 PEM and the wrapping secret 32
// bytes.
func TestKeystoreFileKeysArePrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	s, err := keystore.OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Identity(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateNext(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Seal([]byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	if m := fileMode(t, dir); m != 0o700 {
		t.Errorf("directory mode %v, want 0700", m)
	}
	for _, tc := range []struct {
		name, pemType string
		size          int
	}{
		{name: "identity.key", pemType: "PRIVATE KEY"},
		{name: "identity-next.key", pemType: "PRIVATE KEY"},
		{name: "wrap.key", size: 32},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name)
			if m := fileMode(t, path); m != 0o600 {
				t.Errorf("mode %v, want 0600", m)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if tc.pemType != "" {
				if block, _ := pem.Decode(b); block == nil || block.Type != tc.pemType {
					t.Errorf("not a %s PEM block", tc.pemType)
				}
			} else if len(b) != tc.size {
				t.Errorf("%d bytes, want %d", len(b), tc.size)
			}
		})
	}
	if err := s.Promote(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "identity-next.key")); !os.IsNotExist(err) {
		t.Fatalf("the next key file is still there after Promote: %v", err)
	}
}

// TestKeystoreFileRefusesUnsafeKeys: a key file that group or others may
// read, a wrapping secret of the wrong size and an identity key of another
// kind are refused, and none is replaced.
func TestKeystoreFileRefusesUnsafeKeys(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaPEM, err := pki.EncodeKeyPEM(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	identity := func(s *keystore.FileStore) error { _, err := s.Identity(); return err }
	wrapping := func(s *keystore.FileStore) error { _, err := s.Seal([]byte("x"), nil); return err }
	for _, tc := range []struct {
		name    string
		file    string
		content []byte // nil: the file the store made
		mode    os.FileMode
		use     func(*keystore.FileStore) error
		want    string
	}{
		{name: "identity readable by group", file: "identity.key", mode: 0o640, use: identity, want: "must be 0600"},
		{name: "identity readable by others", file: "identity.key", mode: 0o604, use: identity, want: "must be 0600"},
		{name: "wrapping secret readable by group", file: "wrap.key", mode: 0o640, use: wrapping, want: "must be 0600"},
		{name: "wrapping secret too short", file: "wrap.key", content: make([]byte, 16), mode: 0o600, use: wrapping, want: "holds 16 bytes"},
		{name: "identity not a key", file: "identity.key", content: []byte("not a key"), mode: 0o600, use: identity, want: "no PEM block"},
		{name: "identity an RSA key", file: "identity.key", content: rsaPEM, mode: 0o600, use: identity, want: "not ECDSA P-256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, tc.file)
			if tc.content == nil {
				s, err := keystore.OpenFile(dir)
				if err != nil {
					t.Fatal(err)
				}
				if err := tc.use(s); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(path, tc.content, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			s, err := keystore.OpenFile(dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.use(s); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
			if after, _ := os.ReadFile(path); string(after) != string(before) {
				t.Fatal("the refused file was changed")
			}
		})
	}
}
