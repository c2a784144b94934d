package registry_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/registry"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// TestRegistryConcurrentUpdatesOfOneGateway: many writers changing one
// gateway at once (two nodes, several API requests) all succeed, each
// change kept; a revision conflict is retried, never an internal error.
func TestRegistryConcurrentUpdatesOfOneGateway(t *testing.T) {
	c := newCluster(t)
	a, b := c.open(), c.open()
	mustTenant(t, a, "acme")
	mustGateway(t, a, "acme", "TSGW06ACM00000001")
	tu.Eventually(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, ok := b.reg.Gateway("acme", "TSGW06ACM00000001"); !ok {
			return errors.New("the second node does not know the gateway yet")
		}
		return nil
	})
	const writers = 100
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		n := a
		if i%2 == 1 {
			n = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := call(func(ctx context.Context) (registry.Gateway, error) {
				return n.reg.SetLabels(ctx, "acme", "TSGW06ACM00000001", map[string]string{fmt.Sprintf("w%02d", i): "x"})
			})
			if err != nil {
				errs <- fmt.Errorf("writer %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
