package registry_test

import (
	"context"
	"crypto/x509"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/registry"
)

// TestRotateCANeverDropsATrustedVersion: rotations in a row, each with an
// overlap still running, never make the registry forget a previous version
// it promised to trust (its certificates would be refused as of an unknown
// CA, and its live sessions never swept as a retired one's): once the
// record holds as many trusted previous versions as it keeps, a rotation
// is refused instead.
func TestRotateCANeverDropsATrustedVersion(t *testing.T) {
	c := newCluster(t)
	n := c.open()
	mustTenant(t, n, "acme")
	mustGateway(t, n, "acme", gw1)
	leaf := mustIssue(t, n, "acme", gw1).cert.Leaf
	refused := 0
	for i := range 12 {
		_, err := call(func(ctx context.Context) (client.TenantCA, error) { return n.reg.RotateCA(ctx, "acme", time.Hour) })
		if err != nil {
			if !registry.ErrCAVersionsTrusted.Is(err) {
				t.Fatalf("rotation %d: %v", i+1, err)
			}
			refused++
		}
		if _, err := n.reg.Authenticate([]*x509.Certificate{leaf}, time.Now()); err != nil {
			t.Fatalf("after rotation %d, a certificate of version 1 (trusted for an hour) is refused: %v", i+1, err)
		}
	}
	if refused == 0 {
		t.Fatal("twelve rotations within the overlap were all made")
	}
}
