//go:build cgo

package kms_test

import (
	"context"
	"testing"

	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/testutil"
)

// benchProviders returns a file root and a root in a SoftHSM2 token.
func benchProviders(b *testing.B) []struct {
	name string
	root kms.RootKey
} {
	b.Helper()
	module, pin := testutil.SoftHSMTokens(b, "kms-bench")
	hsm, err := kms.OpenPKCS11Root(kms.PKCS11Config{Module: module, Token: "kms-bench", PINFile: pin}, true)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { hsm.Close() })
	return []struct {
		name string
		root kms.RootKey
	}{{name: "file", root: fileRoot(b)}, {name: "pkcs11", root: hsm}}
}

// BenchmarkKMSEnsureTenantCold measures what the root key provider costs:
// a cold keyring's first use of a tenant, which unwraps its data key (data
// keys are cached afterwards, so Seal and Open do not reach the provider).
func BenchmarkKMSEnsureTenantCold(b *testing.B) {
	ctx := context.Background()
	for _, p := range benchProviders(b) {
		b.Run(p.name, func(b *testing.B) {
			store := newMemStore()
			if err := kms.NewKeyring(store, p.root).EnsureTenant(ctx, "acme"); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if err := kms.NewKeyring(store, p.root).EnsureTenant(ctx, "acme"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkKMSSealOpenByProvider measures Seal and Open of a message-sized
// value on a warm keyring under each provider: the same work, the data key
// being cached.
func BenchmarkKMSSealOpenByProvider(b *testing.B) {
	ctx := context.Background()
	payload := make([]byte, 200)
	aad := []byte("0123456789abcdef0123456789abcdef")
	for _, p := range benchProviders(b) {
		b.Run(p.name, func(b *testing.B) {
			k := kms.NewKeyring(newMemStore(), p.root)
			if err := k.EnsureTenant(ctx, "acme"); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(payload)))
			for b.Loop() {
				sealed, err := k.Seal(ctx, "acme", payload, aad)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := k.Open(ctx, "acme", sealed, aad); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
