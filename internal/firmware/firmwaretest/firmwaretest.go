// Package firmwaretest sets up a tenant's firmware repository on a test
// node the way a publisher does, through the public client over HTTPS:
// offline root and targets keys made in the test, the first root naming
// the node's online keys, and targets published one image at a time. Only
// tests import it.
package firmwaretest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"strconv"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/firmware"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// Repo is a tenant's repository and its publisher's keys.
type Repo struct {
	Tenant string
	// Client is the operator's client of the node.
	Client *client.Client
	// RootKey and TargetsKey are the publisher's offline keys.
	RootKey, TargetsKey ed25519.PrivateKey
	// Root is root.json version 1, the gateways' pinned trusted root.
	Root []byte
	t    testing.TB
}

// Key returns a new Ed25519 key.
func Key(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// New returns a publisher of tenant's repository with fresh offline keys,
// calling the API with c; the repository is not created yet.
func New(t testing.TB, c *client.Client, tenant string) *Repo {
	return &Repo{Tenant: tenant, Client: c, RootKey: Key(t), TargetsKey: Key(t), t: t}
}

// InitRequest returns the first root and targets, naming the tenant's
// online keys, and keeps the root as Root.
func (r *Repo) InitRequest() client.InitFirmwareRequest {
	r.t.Helper()
	online, err := r.Client.FirmwareOnlineKeys(context.Background(), r.Tenant)
	if err != nil {
		r.t.Fatalf("online keys: %v", err)
	}
	root, targets, err := firmware.NewRepository(r.RootKey, r.TargetsKey, *online, time.Now().AddDate(1, 0, 0), time.Now().AddDate(0, 3, 0))
	if err != nil {
		r.t.Fatal(err)
	}
	r.Root = root
	return client.InitFirmwareRequest{Root: root, Targets: targets}
}

// Init creates tenant on n (when missing) and its repository.
func Init(t testing.TB, n *node.Node, tenant string) *Repo {
	t.Helper()
	if _, ok := n.Registry().Tenant(tenant); !ok {
		if _, err := n.CreateTenant(context.Background(), tenant); err != nil {
			t.Fatal(err)
		}
	}
	r := New(t, nodetest.NewAPI(t, n).Client, tenant)
	if _, err := r.Client.InitFirmware(context.Background(), tenant, r.InitRequest()); err != nil {
		t.Fatalf("init: %v", err)
	}
	return r
}

// Targets returns the repository's current targets.json.
func (r *Repo) Targets() []byte {
	r.t.Helper()
	repo, err := r.Client.GetFirmwareRepository(context.Background(), r.Tenant)
	if err != nil {
		r.t.Fatal(err)
	}
	b, err := r.Client.FirmwareMetadata(context.Background(), r.Tenant, strconv.FormatInt(repo.Roles.Targets.Version, 10)+".targets.json")
	if err != nil {
		r.t.Fatal(err)
	}
	return b
}

// Sign returns the targets that follow the current ones with image as the
// target of model and version, signed by key (whichever key signed the
// current ones: the publisher refuses to follow targets its key did not
// sign, and tests sign with wrong keys on purpose).
func (r *Repo) Sign(image []byte, model, version string, key ed25519.PrivateKey) []byte {
	r.t.Helper()
	cur, err := metadata.Targets().FromBytes(r.Targets())
	if err != nil {
		r.t.Fatal(err)
	}
	s, err := signature.LoadED25519Signer(key)
	if err != nil {
		r.t.Fatal(err)
	}
	cur.ClearSignatures()
	if _, err := cur.Sign(s); err != nil {
		r.t.Fatal(err)
	}
	resigned, err := cur.ToBytes(false)
	if err != nil {
		r.t.Fatal(err)
	}
	b, err := firmware.AddTarget(resigned, image, model, version, time.Now().AddDate(0, 3, 0), key)
	if err != nil {
		r.t.Fatal(err)
	}
	return b
}

// Publish uploads image and publishes it as model's version, signed by the
// targets key; it returns the publish error.
func (r *Repo) Publish(image []byte, model, version string) error {
	r.t.Helper()
	ctx := context.Background()
	if _, err := r.Client.UploadFirmwareImage(ctx, r.Tenant, image); err != nil {
		return err
	}
	_, err := r.Client.PublishFirmware(ctx, r.Tenant, r.Sign(image, model, version, r.TargetsKey))
	return err
}
