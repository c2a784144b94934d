// Integration names, unique in a tenant across nodes: the registry's
// atomic name claims.

package forward

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/iotransit/iotransit/internal/backbone/kverr"
	"github.com/nats-io/nats.go/jetstream"
)

// Names are unique in a tenant across nodes: a name is claimed by creating
// the key nameKey(name) in the integrations bucket (atomic in JetStream),
// whose value is the owner's id. A claim left behind by a crash between the
// claim and the write of the integration (its owner missing, or named
// otherwise) is taken over once it is older than staleClaim.
var staleClaim = time.Minute

func nameKey(name string) string {
	h := sha256.Sum256([]byte(name))
	return "name." + hex.EncodeToString(h[:16])
}

// reserveName claims name for integration id (ErrNameTaken if another
// holds it).
func (reg *Registry) reserveName(ctx context.Context, tenant, name, id string) error {
	kv, err := reg.bucket(ctx, tenant)
	if err != nil {
		return err
	}
	k := nameKey(name)
	for range 3 {
		_, err := kv.Create(ctx, k, []byte(id))
		if err == nil {
			return nil
		}
		if !kverr.Conflict(err) {
			return fmt.Errorf("forward: claim name: %w", err)
		}
		ent, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // released meanwhile
		}
		if err != nil {
			return fmt.Errorf("forward: claim name: %w", err)
		}
		owner := string(ent.Value())
		if owner == id {
			return nil
		}
		if time.Since(ent.Created()) < staleClaim {
			return ErrNameTaken.New()
		}
		r, _, err := reg.load(ctx, tenant, owner)
		if err == nil && r.Name == name {
			return ErrNameTaken.New()
		}
		if err != nil && !ErrIntegrationNotFound.Is(err) {
			return err
		}
		if _, err := kv.Update(ctx, k, []byte(id), ent.Revision()); err == nil {
			return nil
		} else if !kverr.Conflict(err) {
			return fmt.Errorf("forward: claim name: %w", err)
		}
	}
	return ErrNameTaken.New()
}

// releaseName gives up id's claim on name. A failure leaves a claim that
// reserveName takes over later.
func (reg *Registry) releaseName(ctx context.Context, tenant, name, id string) {
	kv, err := reg.bucket(ctx, tenant)
	if err != nil {
		return
	}
	k := nameKey(name)
	ent, err := kv.Get(ctx, k)
	if err != nil || string(ent.Value()) != id {
		return
	}
	if err := kv.Delete(ctx, k, jetstream.LastRevision(ent.Revision())); err != nil {
		reg.log.Warn("release integration name", "tenant_id", tenant, "integration_id", id, "error", err)
	}
}
