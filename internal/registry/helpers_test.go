package registry_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"sync"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/backbone"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/internal/registry"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// node is one process's view: a backbone, a keyring and a registry.
type node struct {
	bb   *backbone.Backbone
	keys *kms.Keyring
	reg  *registry.Registry
}

// cluster is an embedded JetStream with its data directory and root key, so
// that it can be restarted.
type cluster struct {
	t    *testing.T
	dir  string
	root []byte
	bb   *backbone.Backbone
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	root := make([]byte, kms.RootKeySize)
	if _, err := rand.Read(root); err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, dir: t.TempDir(), root: root}
	c.start()
	return c
}

// start starts the embedded server on the cluster's data directory.
func (c *cluster) start() {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bb, err := backbone.Start(ctx, backbone.Config{DataDir: c.dir, Replicas: 1}, tu.Logger(c.t))
	if err != nil {
		c.t.Fatalf("start backbone: %v", err)
	}
	c.t.Cleanup(bb.Close)
	c.bb = bb
}

// open opens a registry with its own keyring (same root, same key bucket),
// as another node would. The context given to Open is cancelled as soon as
// Open returns, as a start-up timeout would be.
func (c *cluster) open() *node {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := c.bb.KV(ctx, names.KMSBucket, 1)
	if err != nil {
		c.t.Fatalf("kms bucket: %v", err)
	}
	keys, err := kms.New(c.root, backbone.KeyStore{KV: kv})
	if err != nil {
		c.t.Fatal(err)
	}
	reg, err := registry.Open(ctx, c.bb, keys, tu.Logger(c.t))
	if err != nil {
		c.t.Fatalf("open registry: %v", err)
	}
	c.t.Cleanup(reg.Close)
	return &node{bb: c.bb, keys: keys, reg: reg}
}

// call runs fn with a context that is cancelled as soon as fn returns.
func call[T any](fn func(context.Context) (T, error)) (T, error) {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return fn(c)
}

func mustTenant(t *testing.T, n *node, id string) registry.Tenant {
	t.Helper()
	tenant, err := call(func(c context.Context) (registry.Tenant, error) { return n.reg.CreateTenant(c, id) })
	if err != nil {
		t.Fatalf("create tenant %s: %v", id, err)
	}
	return tenant
}

func mustGateway(t *testing.T, n *node, tenant, serial string) registry.Gateway {
	t.Helper()
	g, err := call(func(c context.Context) (registry.Gateway, error) { return n.reg.RegisterGateway(c, tenant, serial) })
	if err != nil {
		t.Fatalf("register %s/%s: %v", tenant, serial, err)
	}
	return g
}

func mustState(t *testing.T, n *node, tenant, serial string, s registry.GatewayState) registry.Gateway {
	t.Helper()
	g, err := call(func(c context.Context) (registry.Gateway, error) {
		return n.reg.SetGatewayState(c, tenant, serial, s)
	})
	if err != nil {
		t.Fatalf("set %s/%s %s: %v", tenant, serial, s, err)
	}
	return g
}

// csrFor returns a PEM CSR with commonName and its key.
func csrFor(t *testing.T, commonName string) ([]byte, tls.Certificate) {
	t.Helper()
	b, kp := tu.CSR(t, commonName)
	return b, *kp
}

type issued struct {
	pem  []byte
	rec  registry.Certificate
	cert *tls.Certificate
}

func issue(t *testing.T, n *node, tenant, serial string) (issued, error) {
	t.Helper()
	csr, kp := csrFor(t, serial)
	var rec registry.Certificate
	certPEM, err := call(func(c context.Context) ([]byte, error) {
		var (
			b   []byte
			err error
		)
		b, rec, err = n.reg.IssueCertificate(c, tenant, serial, csr, 24*time.Hour)
		return b, err
	})
	if err != nil {
		return issued{}, err
	}
	leaf, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		t.Fatalf("issued PEM: %v", err)
	}
	kp.Certificate, kp.Leaf = [][]byte{leaf.Raw}, leaf
	return issued{pem: certPEM, rec: rec, cert: &kp}, nil
}

func mustIssue(t *testing.T, n *node, tenant, serial string) issued {
	t.Helper()
	is, err := issue(t, n, tenant, serial)
	if err != nil {
		t.Fatalf("issue %s/%s: %v", tenant, serial, err)
	}
	return is
}

// changes records the gateway changes a registry reports.
type changes struct {
	mu  sync.Mutex
	all []registry.Gateway
}

func watch(n *node) *changes {
	c := &changes{}
	n.reg.OnGatewayChange(func(g registry.Gateway) {
		c.mu.Lock()
		c.all = append(c.all, g)
		c.mu.Unlock()
	})
	return c
}

// of returns the states reported for one gateway, in order.
func (c *changes) of(serial string) []registry.GatewayState {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []registry.GatewayState
	for _, g := range c.all {
		if g.Serial == serial {
			out = append(out, g.State)
		}
	}
	return out
}

// records returns the records reported for one gateway, in order.
func (c *changes) records(serial string) []registry.Gateway {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []registry.Gateway
	for _, g := range c.all {
		if g.Serial == serial {
			out = append(out, g)
		}
	}
	return out
}
