package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/registry"
	"github.com/iotransit/iotransit/internal/retry"
)

// Tenant deletion (DELETE /v1/tenants/{t}), in this order:
//
//  1. The tenant's record is marked deleting in the registry. Every node
//     follows the tenants bucket: it forgets the tenant at once (its
//     gateways' certificates and its credentials' routes are refused), ends
//     its gateways' live sessions, stops forwarding its integrations and
//     evicts its cached data keys (dropTenantHere).
//  2. Its key material is destroyed (kms Shred): from then on nothing
//     sealed for it opens on any node, whatever copy of its data is left.
//  3. Its streams (messages, rejected, audit index, dead letters, audit)
//     and consumers (they live on those streams) are deleted, its entries in
//     the shared buckets purged, then its KV buckets and firmware object
//     store deleted.
//  4. The record becomes a tombstone (deleted, by whom, when): the id stays
//     reserved.
//
// Every step may run again: a deletion cut short (the node died, a step
// failed) is finished by running DELETE again, and by the start-up sweep
// of any node (resumeDeletions).

// deleteTimeout bounds one run of a tenant's deletion.
const deleteTimeout = 2 * time.Minute

// Steps of a tenant's deletion after the mark, by the names the test hook
// sees.
const (
	stepShred   = "shred"
	stepStreams = "streams"
	stepShared  = "shared"
	stepBuckets = "buckets"
	stepFinish  = "tombstone"
)

// DeleteTenant deletes a tenant (see above) on behalf of by (an audit
// actor) and returns its tombstone. A tenant being deleted is finished; a
// deleted one is registry.ErrTenantDeleted, an unknown one
// registry.ErrTenantNotFound.
func (n *Node) DeleteTenant(ctx context.Context, id, by string) (registry.Tenant, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deleteTimeout)
	defer cancel()
	if id == audit.SystemTenant {
		return registry.Tenant{}, registry.ErrTenantNotFound.New()
	}
	t, err := n.reg.MarkTenantDeleting(ctx, id, by)
	if err != nil {
		return registry.Tenant{}, err
	}
	n.dropTenantHere(t.ID)
	return n.finishDeletion(ctx, t.ID)
}

// DeletedTenants returns the tombstones of deleted tenants and the records
// of those being deleted.
func (n *Node) DeletedTenants() []registry.Tenant { return n.reg.DeletedTenants() }

// finishDeletion runs the steps after the mark, each of which may have run
// before.
func (n *Node) finishDeletion(ctx context.Context, id string) (registry.Tenant, error) {
	steps := []struct {
		name string
		run  func(context.Context, string) error
	}{
		{stepShred, n.keys.Shred},
		{stepStreams, n.deleteTenantStreams},
		// The shared entries before the buckets: an index entry left to a
		// deleted bucket would lead a reader (credential.Store) to make the
		// bucket again.
		{stepShared, n.purgeTenantShared},
		{stepBuckets, n.deleteTenantBuckets},
	}
	for _, s := range steps {
		if n.deleteHook != nil {
			if err := n.deleteHook(s.name); err != nil {
				return registry.Tenant{}, err
			}
		}
		if err := s.run(ctx, id); err != nil {
			return registry.Tenant{}, fmt.Errorf("delete tenant %s: %s: %w", id, s.name, err)
		}
	}
	if n.deleteHook != nil {
		if err := n.deleteHook(stepFinish); err != nil {
			return registry.Tenant{}, err
		}
	}
	t, err := n.reg.MarkTenantDeleted(ctx, id)
	if err != nil {
		return registry.Tenant{}, err
	}
	n.log.Info("tenant deleted", "tenant_id", id, "by", t.DeletedBy)
	return t, nil
}

// dropTenantHere is what every node does when it sees a tenant marked for
// deletion: its gateways' live sessions here end, its integrations are no
// longer forwarded from here, this node's cached data keys of the tenant
// are evicted, and, once the sessions are gone, the state of its gateways
// is dropped unwritten (a write would make its deleted bucket again).
func (n *Node) dropTenantHere(id string) {
	if k := n.ing.DropTenant(id); k > 0 {
		n.log.Info("live sessions of a deleted tenant closed", "tenant_id", id, "sessions", k)
	}
	n.fwd.DropTenant(id)
	n.keys.Evict(id)
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	for len(n.ing.Sessions(id)) > 0 && retry.Sleep(ctx, 20*time.Millisecond) {
	}
	n.gwState.DropTenant(id)
	// Sign what this node appended to the tenant's log, so that it does
	// not try again once the log is deleted.
	if _, err := n.audit.Checkpoint(ctx, id); err != nil && !audit.ErrNotFound.Is(err) {
		n.log.Warn("audit checkpoint of a deleted tenant", "tenant_id", id, "error", err)
	}
}

// deleteTenantStreams deletes the tenant's streams, with their consumers:
// messages, rejected, the integrations' dead letters, the audit index and,
// last, the audit log (its pending checkpoint was signed when the tenant
// was dropped here).
func (n *Node) deleteTenantStreams(ctx context.Context, id string) error {
	del := []string{names.MessageStream(id), names.RejectedStream(id), names.AuditIndexStream(id)}
	prefix := names.DeadLetterStreamPrefix(id)
	lister := n.bb.JS.StreamNames(ctx)
	for name := range lister.Name() {
		if strings.HasPrefix(name, prefix) {
			del = append(del, name)
		}
	}
	if err := lister.Err(); err != nil {
		return fmt.Errorf("list streams: %w", err)
	}
	del = append(del, names.AuditStream(id))
	for _, name := range del {
		if err := n.bb.JS.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("delete stream %s: %w", name, err)
		}
	}
	return nil
}

// deleteTenantBuckets deletes the tenant's KV buckets and its firmware
// object store.
func (n *Node) deleteTenantBuckets(ctx context.Context, id string) error {
	for _, b := range []string{
		names.GatewaysBucket(id), names.CredentialsBucket(id), names.IntegrationsBucket(id),
		names.IntegrationStateBucket(id), names.GatewayStateBucket(id), names.FirmwareBucket(id),
	} {
		if err := n.bb.JS.DeleteKeyValue(ctx, b); err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("delete bucket %s: %w", b, err)
		}
	}
	os := names.FirmwareImages(id)
	if err := n.bb.JS.DeleteObjectStore(ctx, os); err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("delete object store %s: %w", os, err)
	}
	return nil
}

// purgeTenantShared purges the tenant's entries from the deployment's
// shared buckets: the registry's (serials, enrollment tokens, claimed
// factory gateways), the credential index, its mesh, its online firmware
// keys and notices, its forwarding leases and its re-encryption job. A value and its history are
// purged, not only marked deleted.
func (n *Node) purgeTenantShared(ctx context.Context, id string) error {
	if err := n.reg.EraseTenant(ctx, id); err != nil {
		return err
	}
	if err := n.purgeShared(ctx, names.CredentialIndexBucket, "", func(v []byte) bool { return string(v) == id }); err != nil {
		return err
	}
	// Keys "{tenant}.…" (names.MeshKey, names.FirmwareNotice, the online
	// firmware keys, the leases).
	for _, b := range []string{names.MeshBucket, names.FirmwareKeysBucket, names.FirmwareNoticesBucket, names.LeasesBucket} {
		if err := n.purgeShared(ctx, b, id+".>", nil); err != nil {
			return err
		}
	}
	// Its re-encryption job, under the key "{tenant}" (names.ReencryptBucket).
	return n.purgeShared(ctx, names.ReencryptBucket, id, nil)
}

// purgeShared purges the keys of a shared bucket (if it exists) that
// match filter ("": all) and whose value matches (nil: any).
func (n *Node) purgeShared(ctx context.Context, bucket, filter string, match func([]byte) bool) error {
	kv, err := n.bb.JS.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open bucket %s: %w", bucket, err)
	}
	var lister jetstream.KeyLister
	if filter == "" {
		lister, err = kv.ListKeys(ctx)
	} else {
		lister, err = kv.ListKeysFiltered(ctx, filter)
	}
	if err != nil {
		return fmt.Errorf("list %s: %w", bucket, err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	for _, k := range keys {
		if match != nil {
			e, err := kv.Get(ctx, k)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				return fmt.Errorf("read %s: %w", bucket, err)
			}
			if !match(e.Value()) {
				continue
			}
		}
		if err := kv.Purge(ctx, k); err != nil {
			return fmt.Errorf("purge %s in %s: %w", k, bucket, err)
		}
	}
	return nil
}

// resumeDeletions finishes, in the background, the deletions of tenants
// still marked deleting when the node started (the node that ran them
// stopped midway), each audited in _system (its end, and its first
// failure); it retries until it works or the node stops.
func (n *Node) resumeDeletions() {
	for _, t := range n.reg.DeletedTenants() {
		if t.State != registry.TenantDeleting {
			continue
		}
		id := t.ID
		go func() {
			failed := false // a failure is audited once, not at every retry
			_ = retry.Until(n.ctx, retry.Backoff{Base: time.Second, Max: time.Minute}, func(ctx context.Context) error {
				_, err := n.finishDeletion(ctx, id)
				outcome := "ok"
				if err != nil {
					if failed {
						return err
					}
					failed, outcome = true, fault.From(err).Code()
				}
				ev := audit.Event{Actor: "node", Action: actionTenantDelete, Target: "tenant:" + id, Outcome: outcome,
					Detail: map[string]string{"resumed": "start-up sweep"}}
				if _, aerr := n.audit.Append(ctx, audit.SystemTenant, ev); aerr != nil {
					n.log.Error("audit of a resumed tenant deletion failed", "tenant_id", id, "error", aerr)
				}
				return err
			}, func(err error, wait time.Duration) {
				n.log.Warn("tenant deletion not finished; retrying", "tenant_id", id, "error", err, "retry_in", wait.String())
			})
		}()
	}
}

// actionTenantDelete is the audit action of a tenant's deletion (the API
// writes it under the same name).
const actionTenantDelete = "registry.tenant.delete"
