package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/backbone"
	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/pki"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// TestNodeOpensPlatformSecretsOfTheOldLayout: a data directory whose
// platform secrets were written by the node before issue 7 (commit 792bb3c:
// systemKey and loadServerCA, copied here with their literal bucket, key
// and associated-data names) opens with today's node, which uses those
// secrets rather than making new ones: the same JWT and audit signing keys
// and the same server CA, and the stored records are left as they were.
func TestNodeOpensPlatformSecretsOfTheOldLayout(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second*tu.Slowdown())
	defer cancel()

	// The old node's first start, as far as its platform secrets go.
	root, err := kms.LoadOrCreateRootKey(filepath.Join(dir, "root.key"))
	if err != nil {
		t.Fatal(err)
	}
	bb, err := backbone.Start(ctx, backbone.Config{DataDir: dir, Replicas: 1}, tu.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	kmsKV, err := bb.KV(ctx, "iotransit_kms", 1)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kms.New(root, backbone.KeyStore{KV: kmsKV})
	if err != nil {
		t.Fatal(err)
	}
	sys, err := bb.KV(ctx, "iotransit_system", 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.EnsureTenant(ctx, "_system"); err != nil {
		t.Fatal(err)
	}
	oldSeed := func(name string) []byte { // old systemKey
		seed := make([]byte, ed25519.SeedSize)
		if _, err := rand.Read(seed); err != nil {
			t.Fatal(err)
		}
		sealed, err := keys.Seal(ctx, "_system", seed, []byte("node/system-key/"+name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sys.Create(ctx, name, sealed); err != nil {
			t.Fatal(err)
		}
		return seed
	}
	jwtSeed, auditSeed := oldSeed("jwt-ed25519"), oldSeed("audit-ed25519")
	ca, err := pki.NewCA("iotransit server CA", 20*365*24*time.Hour, time.Now()) // old loadServerCA
	if err != nil {
		t.Fatal(err)
	}
	der, err := ca.KeyDER()
	if err != nil {
		t.Fatal(err)
	}
	sealedCAKey, err := keys.Seal(ctx, "_system", der, []byte("node/server-ca-key"))
	if err != nil {
		t.Fatal(err)
	}
	oldRecord, err := json.Marshal(struct {
		Cert string `json:"cert"`
		Key  []byte `json:"key"`
	}{string(ca.CertPEM), sealedCAKey})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sys.Create(ctx, "server-ca", oldRecord); err != nil {
		t.Fatal(err)
	}
	stored := map[string][]byte{}
	for _, k := range []string{"jwt-ed25519", "audit-ed25519", "server-ca"} {
		e, err := sys.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		stored[k] = e.Value()
	}
	bb.Close()

	// Today's node on that directory.
	n, err := Start(ctx, Config{DataDir: dir, MQTTAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", ServerNames: []string{"127.0.0.1"}, Logger: tu.Logger(t)})
	if err != nil {
		t.Fatalf("the node does not open a data directory of the old layout: %v", err)
	}
	defer n.Close()
	if !bytes.Equal(n.ServerCAPEM(), ca.CertPEM) {
		t.Error("the node made a new server CA instead of using the stored one")
	}
	if got := n.audit.PublicKey(); !got.Equal(ed25519.NewKeyFromSeed(auditSeed).Public()) {
		t.Error("the audit log signs with another key than the stored audit-ed25519")
	}
	sec, err := n.secrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	jwtKey, err := sec.signingKey(ctx, "jwt-ed25519")
	if err != nil {
		t.Fatal(err)
	}
	if !jwtKey.Equal(ed25519.NewKeyFromSeed(jwtSeed)) {
		t.Error("the JWT key is not the stored jwt-ed25519")
	}
	for k, v := range stored {
		e, err := sec.store.Get(ctx, k)
		if err != nil || !bytes.Equal(e, v) {
			t.Errorf("record %s changed or lost (%v)", k, err)
		}
	}
}
