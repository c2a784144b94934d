// Retry now: ending the backoff wait of an integration's failing batch, on
// whichever node delivers it. The request travels the way every change of
// an integration does, through the tenant's integrations bucket: the
// registry (on any node) puts the key retryKey(id), and the engine of each
// node, which watches the bucket, wakes that integration's worker if it
// runs there. Only the worker holding the lease is waiting on a batch.

package forward

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/fault"
)

// ErrIntegrationPaused is the answer to retry-now on a paused integration.
var ErrIntegrationPaused = fault.Define("forward.integration_paused", fault.Conflict, "the integration is paused: resume it to deliver")

// retryPrefix starts the key of a retry-now request in the integrations
// bucket.
const retryPrefix = "retry."

func retryKey(id string) string { return retryPrefix + id }

// retryID returns the integration id of a retry-now key, "" for any other
// key.
func retryID(key string) string {
	id, ok := strings.CutPrefix(key, retryPrefix)
	if !ok || !validID(id) {
		return ""
	}
	return id
}

// RetryNow ends the backoff wait of the integration's failing batch: it is
// tried again at once by the node delivering it. Nothing happens to an
// integration that is not waiting to retry. A paused integration is
// refused (ErrIntegrationPaused), and so is a websocket one (nothing to
// deliver).
func (reg *Registry) RetryNow(ctx context.Context, tenant, id string) (Integration, error) {
	r, _, err := reg.load(ctx, tenant, id)
	if err != nil {
		return Integration{}, err
	}
	if r.Type == TypeWebsocket {
		return Integration{}, ErrIntegrationInvalid.WithDetail("a websocket integration has no deliveries to retry")
	}
	if r.Paused {
		return Integration{}, ErrIntegrationPaused.New()
	}
	sec, err := reg.secrets(ctx, r)
	if err != nil {
		return Integration{}, err
	}
	kv, err := reg.bucket(ctx, tenant)
	if err != nil {
		return Integration{}, err
	}
	if _, err := kv.Put(ctx, retryKey(id), []byte(time.Now().UTC().Format(time.RFC3339Nano))); err != nil {
		return Integration{}, fmt.Errorf("forward: retry now: %w", err)
	}
	return reg.public(r.Integration, sec), nil
}

// forgetRetry removes an integration's retry-now key (best effort: a key
// left behind names no integration and wakes nothing).
func (reg *Registry) forgetRetry(ctx context.Context, kv jetstream.KeyValue, id string) {
	if err := kv.Purge(ctx, retryKey(id)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		reg.log.Warn("remove retry-now key", "integration_id", id, "error", err)
	}
}

// retryNow wakes the worker of an integration if it runs on this node.
func (e *Engine) retryNow(tenant, id string) {
	e.mu.Lock()
	w := e.workers[workerKey(tenant, id)]
	e.mu.Unlock()
	if w == nil {
		return
	}
	w.mu.Lock()
	pokes := append([]chan struct{}{w.poke}, w.pokes...) // every lane waits on its own
	w.mu.Unlock()
	for _, p := range pokes {
		select {
		case p <- struct{}{}:
		default: // one is pending already
		}
	}
}
