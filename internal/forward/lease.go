// Leases: one node delivers an integration at a time.

package forward

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/kverr"
	"github.com/iotransit/iotransit/internal/backbone/names"
)

// lease holds an integration for this node: a key in a TTL bucket, renewed
// while the worker runs. The returned context ends when the lease is lost.
func (e *Engine) lease(ctx context.Context, tenant, id string) (context.Context, func(), error) {
	e.mu.Lock()
	kv := e.leases
	e.mu.Unlock()
	if kv == nil {
		var err error
		if kv, err = e.streams.KVWithTTL(ctx, names.LeasesBucket, e.cfg.LeaseTTL); err != nil {
			return nil, nil, err
		}
		e.mu.Lock()
		e.leases = kv
		e.mu.Unlock()
	}
	key := tenant + "." + id
	var rev uint64
	for {
		r, err := kv.Create(ctx, key, []byte(e.cfg.NodeID))
		if err == nil {
			rev = r
			break
		}
		if !kverr.Conflict(err) {
			return nil, nil, err
		}
		// Our own lease from before a restart (same node id): take it back.
		if ent, gerr := kv.Get(ctx, key); gerr == nil && string(ent.Value()) == e.cfg.NodeID {
			if r, uerr := kv.Update(ctx, key, []byte(e.cfg.NodeID), ent.Revision()); uerr == nil {
				rev = r
				break
			}
		}
		select { // another node holds it; it expires if that node dies
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(e.cfg.LeaseTTL / 3):
		}
	}
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(e.cfg.LeaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-lctx.Done():
				return
			case <-t.C:
				r, err := kv.Update(lctx, key, []byte(e.cfg.NodeID), rev)
				if err != nil {
					if lctx.Err() == nil {
						e.log.Warn("integration lease lost", "tenant_id", tenant, "integration_id", id, "error", err)
					}
					cancel()
					return
				}
				rev = r
			}
		}
	}()
	release := func() {
		cancel()
		<-done
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		_ = kv.Delete(dctx, key, jetstream.LastRevision(rev))
	}
	return lctx, release, nil
}
