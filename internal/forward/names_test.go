package forward_test

import (
	"context"
	"sync"
	"testing"

	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestIntegrationNamesAreUniqueUnderConcurrency: creates racing for one
// name (on any node: the claim is a JetStream KV create) give exactly one
// integration; deleting or renaming frees the name.
func TestIntegrationNamesAreUniqueUnderConcurrency(t *testing.T) {
	n := nodetest.Start(t, nil)
	nodetest.Gateway(t, n, tenant, gwSer) // makes the tenant
	eng, ctx := n.Forward(), context.Background()
	const racers = 8
	var wg sync.WaitGroup
	results := make(chan error, racers)
	for range racers {
		wg.Go(func() {
			_, _, err := eng.Create(ctx, tenant, forward.Integration{Name: "same", Type: forward.TypeWebsocket})
			results <- err
		})
	}
	wg.Wait()
	close(results)
	created := 0
	for err := range results {
		switch {
		case err == nil:
			created++
		case !forward.ErrNameTaken.Is(err):
			t.Errorf("create: %v", err)
		}
	}
	list, err := eng.List(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	if created != 1 || len(list) != 1 {
		t.Fatalf("%d creates succeeded, %d integrations listed; want 1 and 1", created, len(list))
	}

	// Renaming frees the old name and takes the new one.
	if _, err := eng.Update(ctx, tenant, list[0].ID, forward.Integration{Name: "other"}); err != nil {
		t.Fatal(err)
	}
	b, _, err := eng.Create(ctx, tenant, forward.Integration{Name: "same", Type: forward.TypeWebsocket})
	if err != nil {
		t.Fatalf("the old name after a rename: %v", err)
	}
	if _, _, err := eng.Create(ctx, tenant, forward.Integration{Name: "other", Type: forward.TypeWebsocket}); !forward.ErrNameTaken.Is(err) {
		t.Fatalf("the new name after a rename: %v", err)
	}
	// Deleting frees the name.
	if err := eng.Delete(ctx, tenant, b.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := eng.Create(ctx, tenant, forward.Integration{Name: "same", Type: forward.TypeWebsocket}); err != nil {
		t.Fatalf("a deleted integration's name: %v", err)
	}

	// A claim left by a crash (no integration holds it) blocks the name
	// while fresh, and is taken over once stale.
	kv, err := n.JetStream().KeyValue(ctx, forward.IntegrationsBucket(tenant))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, forward.NameKey("orphan"), []byte("0123456789ab")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := eng.Create(ctx, tenant, forward.Integration{Name: "orphan", Type: forward.TypeWebsocket}); !forward.ErrNameTaken.Is(err) {
		t.Fatalf("a fresh claim: %v", err)
	}
	defer forward.SetStaleClaim(0)()
	if _, _, err := eng.Create(ctx, tenant, forward.Integration{Name: "orphan", Type: forward.TypeWebsocket}); err != nil {
		t.Fatalf("a stale orphan claim: %v", err)
	}
	// A stale claim whose integration still has the name is kept.
	if _, _, err := eng.Create(ctx, tenant, forward.Integration{Name: "orphan", Type: forward.TypeWebsocket}); !forward.ErrNameTaken.Is(err) {
		t.Fatalf("a stale claim of a live integration: %v", err)
	}
}
