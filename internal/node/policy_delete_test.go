package node_test

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestPolicyApplyAfterTenantDeleteMakesNothing: an application of a
// tenant's policy that runs after the tenant was deleted (a retry of one
// that failed, or one queued behind a slow one) does not make the deleted
// tenant's streams again, nor fails (it would be retried for ever).
func TestPolicyApplyAfterTenantDeleteMakesNothing(t *testing.T) {
	n := nodetest.Start(t, nil)
	ctx := context.Background()
	nodetest.Gateway(t, n, "acme", "TSGW06ACM00000001")
	if _, err := nodetest.NewAPI(t, n).Client.DeleteTenant(ctx, "acme", "acme"); err != nil {
		t.Fatal(err)
	}
	if err := node.ApplyRetention(ctx, n, "acme"); err != nil {
		// An error is retried (followPolicies) for as long as the node runs.
		t.Errorf("apply after the deletion: %v, want nothing to do", err)
	}
	for _, name := range []string{names.MessageStream("acme"), names.RejectedStream("acme"), names.AuditStream("acme")} {
		if _, err := n.JetStream().Stream(ctx, name); !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("stream %s of the deleted tenant: %v, want not found", name, err)
		}
	}
}
