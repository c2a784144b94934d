//go:build !cgo

package keystore_test

import (
	"errors"
	"testing"

	"github.com/iotransit/iotransit/internal/gateway/keystore"
)

// TestKeystorePKCS11NeedsCgo: a build without cgo refuses a token store
// with a clear error instead of failing to build.
func TestKeystorePKCS11NeedsCgo(t *testing.T) {
	cfg := keystore.PKCS11Config{Module: "/usr/lib/softhsm/libsofthsm2.so", TokenLabel: "t", PINFile: "pin"}
	for _, tc := range []struct {
		name string
		open func() (keystore.Store, error)
	}{
		{name: "OpenPKCS11", open: func() (keystore.Store, error) { return keystore.OpenPKCS11(cfg) }},
		{name: "Open", open: func() (keystore.Store, error) { return keystore.Open(keystore.Config{PKCS11: &cfg}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := tc.open()
			if !errors.Is(err, keystore.ErrNeedsCgo) || s != nil {
				t.Fatalf("got %v, %v; want ErrNeedsCgo", s, err)
			}
			if err.Error() != "keystore: PKCS#11 support needs a build with cgo" {
				t.Fatalf("error %q", err)
			}
		})
	}
}
