package registry_test

import (
	"context"
	"crypto/x509"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/registry"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// TestRegistryTenantDeletionReachesEveryNode: a tenant marked deleting on
// one node is forgotten by every node within the propagation bound (its
// gateways' certificates no longer authenticate there), each node's
// OnTenantDeleted callback runs once, the id is refused for a new tenant
// on every node, and the tombstone keeps who and when but no CA.
func TestRegistryTenantDeletionReachesEveryNode(t *testing.T) {
	c := newCluster(t)
	a, b := c.open(), c.open()
	ctx := context.Background()
	mustTenant(t, a, "acme")
	mustTenant(t, a, "other")
	mustGateway(t, a, "acme", gw1)
	is := mustIssue(t, a, "acme", gw1)
	tu.Eventually(t, propagation, 5*time.Millisecond, func() error {
		if _, err := b.reg.Authenticate([]*x509.Certificate{is.cert.Leaf}, time.Now()); err != nil {
			return err
		}
		return nil
	})
	var mu sync.Mutex
	told := map[string]int{}
	b.reg.OnTenantDeleted(func(tn registry.Tenant) {
		mu.Lock()
		told[tn.ID]++
		mu.Unlock()
	})

	marked, err := a.reg.MarkTenantDeleting(ctx, "acme", "operator:alice")
	if err != nil {
		t.Fatal(err)
	}
	if marked.State != registry.TenantDeleting || marked.DeletedBy != "operator:alice" || marked.DeletedAt == nil || len(marked.CAKey) > 0 {
		t.Errorf("marked %+v", marked)
	}
	for name, n := range map[string]*node{"a": a, "b": b} {
		tu.Eventually(t, propagation, 5*time.Millisecond, func() error {
			if _, ok := n.reg.Tenant("acme"); ok {
				return errors.New(name + " still knows the tenant")
			}
			if _, err := n.reg.Authenticate([]*x509.Certificate{is.cert.Leaf}, time.Now()); err == nil {
				return errors.New(name + " still authenticates its gateway")
			}
			return nil
		})
		if _, err := n.reg.CreateTenant(ctx, "acme"); !registry.ErrTenantDeleted.Is(err) {
			t.Errorf("%s: re-create: %v, want registry.tenant_deleted", name, err)
		}
		if _, ok := n.reg.Tenant("other"); !ok {
			t.Errorf("%s lost the other tenant", name)
		}
	}
	// Marking again resumes; finishing makes the tombstone.
	if again, err := b.reg.MarkTenantDeleting(ctx, "acme", "operator:bob"); err != nil || again.DeletedBy != "operator:alice" {
		t.Errorf("mark again: %+v, %v: want the first mark", again, err)
	}
	tomb, err := b.reg.MarkTenantDeleted(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if tomb.State != registry.TenantDeleted || tomb.CACert != "" || tomb.DeletedBy != "operator:alice" {
		t.Errorf("tombstone %+v", tomb)
	}
	if _, err := a.reg.MarkTenantDeleting(ctx, "acme", "operator:alice"); !registry.ErrTenantDeleted.Is(err) {
		t.Errorf("delete a deleted tenant: %v, want registry.tenant_deleted", err)
	}
	tu.Eventually(t, propagation, 5*time.Millisecond, func() error {
		if gone, ok := a.reg.DeletedTenant("acme"); !ok || gone.State != registry.TenantDeleted {
			return errors.New("a does not see the tombstone")
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if told["acme"] != 1 || len(told) != 1 {
		t.Errorf("OnTenantDeleted calls %v, want acme once", told)
	}
	// A registry opened later knows the tombstone, not the tenant.
	d := c.open()
	if _, ok := d.reg.Tenant("acme"); ok {
		t.Error("a new registry knows the deleted tenant")
	}
	if got := d.reg.DeletedTenants(); len(got) != 1 || got[0].ID != "acme" {
		t.Errorf("deleted tenants of a new registry: %+v", got)
	}
}
