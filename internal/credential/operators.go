// Named operator credentials: the operator side's own keys, with a role
// each, beside the data directory's bootstrap key (operator.key).

package credential

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/backbone/kverr"
	"github.com/iotransit/iotransit/internal/fault"
)

// Operator roles (client.Roles).
const (
	RoleAdmin        = client.RoleAdmin
	RoleProvisioning = client.RoleProvisioning
	RoleReadonly     = client.RoleReadonly
	RoleMetrics      = client.RoleMetrics
)

// Faults of named operators.
var (
	ErrRoleInvalid       = fault.Define("credential.role_invalid", fault.InvalidArgument, "unknown operator role")
	ErrOperatorName      = fault.Define("credential.operator_name_invalid", fault.InvalidArgument, "an operator name is 1 to 64 of a-z, 0-9, '-' and '_', starting with a letter or digit")
	ErrOperatorNameTaken = fault.Define("credential.operator_name_taken", fault.Conflict, "an operator of this name exists or existed; names are never reused")
	ErrOperatorRevoked   = fault.Define("credential.operator_revoked", fault.Conflict, "the operator is revoked")
	ErrOperatorBusy      = fault.Define("credential.operator_busy", fault.Unavailable, "other operator changes are being made at once; retry")
	ErrOperatorLockout   = fault.Define("credential.operator_lockout", fault.Conflict, "this would leave no way to act as an admin: it needs another active, unexpired operator:admin")
)

// operatorPrefix starts a named operator's bearer token; the bootstrap
// key starts with "itop_", API keys with apiKeyPrefix.
const operatorPrefix = "ito_"

// operatorDomain is the HashSecret domain of named operator secrets.
const operatorDomain = "iotransit/operator/v1"

// operatorTenant is the tenant whose credential bucket holds the operator
// records: the platform's (audit.SystemTenant), which no tenant credential
// reaches.
const operatorTenant = "_system"

// Keys of the operator records in the bucket.
const (
	operatorKeyPrefix = "operator."
	operatorNameIndex = "opname." // + name: the id, so that names are unique forever
	bootstrapKey      = "bootstrap"
)

// Operator is a named operator record: the API's shape (client.Operator,
// whose Key is never stored) and the secret's Hash, never shown.
type Operator struct {
	client.Operator
	Hash []byte `json:"hash,omitempty"`
}

// Public returns the operator without its hash.
func (o Operator) Public() Operator { o.Hash = nil; return o }

// Active reports whether the operator may act at now.
func (o Operator) Active(now time.Time) bool {
	return o.RevokedAt == nil && (o.ExpiresAt == nil || now.Before(*o.ExpiresAt))
}

// bootstrapRecord is the state of the bootstrap key, kept under bootstrapKey.
type bootstrapRecord struct {
	RetiredAt time.Time `json:"retiredAt"`
	RetiredBy string    `json:"retiredBy"`
}

// Operators keeps the named operators in the credential store and follows
// whether the bootstrap key is retired.
type Operators struct {
	s       *Store
	retired atomic.Bool
}

// NewOperators returns the named operators of s.
func NewOperators(s *Store) *Operators { return &Operators{s: s} }

// IsOperatorToken reports whether a bearer token has the named operator form.
func IsOperatorToken(token string) bool { return strings.HasPrefix(token, operatorPrefix) }

// validOperatorName reports whether name may name an operator.
func validOperatorName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for i, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
		case (r == '-' || r == '_') && i > 0:
		default:
			return false
		}
	}
	return true
}

// Create makes a named operator with role, expiring after ttl (0: never),
// and returns it with its token, shown once.
func (o *Operators) Create(ctx context.Context, name, role string, ttl time.Duration, createdBy string) (Operator, string, error) {
	if !validOperatorName(name) {
		return Operator{}, "", ErrOperatorName.New()
	}
	if !slices.Contains(client.Roles, role) {
		return Operator{}, "", ErrRoleInvalid.WithDetail("%q is not a role; roles are %s", truncate(role, 40), strings.Join(client.Roles, ", "))
	}
	if ttl != 0 && (ttl < time.Minute || ttl > 2*365*24*time.Hour) {
		return Operator{}, "", ErrTTLInvalid.New()
	}
	token, id, secret, err := NewToken(operatorPrefix)
	if err != nil {
		return Operator{}, "", err
	}
	now := o.s.now().UTC()
	exp, err := expiry(now, ttl, time.Time{})
	if err != nil {
		return Operator{}, "", err
	}
	op := Operator{Operator: client.Operator{ID: id, Name: name, Role: role, CreatedAt: now, CreatedBy: createdBy, ExpiresAt: exp},
		Hash: HashSecret(operatorDomain, secret)}
	kv, err := o.s.bucket(ctx, operatorTenant)
	if err != nil {
		return Operator{}, "", err
	}
	if _, err := kv.Create(ctx, operatorNameIndex+name, []byte(id)); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return Operator{}, "", ErrOperatorNameTaken.New()
		}
		return Operator{}, "", fmt.Errorf("credential: reserve operator name: %w", err)
	}
	b, err := json.Marshal(op)
	if err != nil {
		return Operator{}, "", err
	}
	if _, err := kv.Create(ctx, operatorKeyPrefix+id, b); err != nil {
		return Operator{}, "", fmt.Errorf("credential: store operator %s: %w", id, err)
	}
	return op.Public(), token, nil
}

// List returns the named operators (without hashes), revoked ones
// included, oldest first.
func (o *Operators) List(ctx context.Context) ([]Operator, error) {
	return list(ctx, o.s, operatorTenant, strings.TrimSuffix(operatorKeyPrefix, "."), func(op Operator) time.Time { return op.CreatedAt }, Operator.Public)
}

// Get returns one named operator (without hash).
func (o *Operators) Get(ctx context.Context, id string) (Operator, error) {
	if !validID(id) {
		return Operator{}, ErrNotFound.New()
	}
	op, _, err := get[Operator](ctx, o.s, operatorTenant, operatorKeyPrefix+id)
	return op.Public(), err
}

// Rotate gives an operator a new secret and returns the new token, shown
// once; the old one stops working at once. A revoked operator is refused.
func (o *Operators) Rotate(ctx context.Context, id string) (Operator, string, error) {
	if !validID(id) {
		return Operator{}, "", ErrNotFound.New()
	}
	_, _, secret, err := NewToken(operatorPrefix)
	if err != nil {
		return Operator{}, "", err
	}
	token := operatorPrefix + id + "_" + secret
	now := o.s.now().UTC()
	revoked := false
	op, err := update(ctx, o.s, operatorTenant, operatorKeyPrefix+id, func(op *Operator) {
		if revoked = op.RevokedAt != nil; revoked {
			return
		}
		op.Hash = HashSecret(operatorDomain, secret)
		op.RotatedAt = &now
	})
	if err != nil {
		return Operator{}, "", err
	}
	if revoked {
		return op.Public(), "", ErrOperatorRevoked.New()
	}
	return op.Public(), token, nil
}

// Revoke revokes an operator; its key stops working at once. Revoking the
// last active admin while the bootstrap key is retired is refused
// (ErrOperatorLockout): nobody could manage operators any more. The
// revocation of an admin is ordered with the others and with the
// bootstrap key's retirement (guarded), so that two made at once cannot
// each count the other's admin as the one left.
func (o *Operators) Revoke(ctx context.Context, id string) (Operator, error) {
	cur, err := o.Get(ctx, id)
	if err != nil {
		return Operator{}, err
	}
	if cur.Role != RoleAdmin || cur.RevokedAt != nil {
		op, _, err := o.revoke(ctx, id)
		return op, err
	}
	out := cur
	err = o.guarded(ctx, func() (func() error, error) {
		retired, err := o.bootstrapRetired(ctx)
		if err != nil {
			return nil, err
		}
		if retired {
			if n, err := o.activeAdmins(ctx, id); err != nil {
				return nil, err
			} else if n == 0 {
				return nil, ErrOperatorLockout.WithDetail("the bootstrap key is retired and this is the last active operator:admin")
			}
		}
		op, changed, err := o.revoke(ctx, id)
		if err != nil || !changed {
			return nil, err
		}
		out = op
		return func() error {
			_, err := update(ctx, o.s, operatorTenant, operatorKeyPrefix+id, func(op *Operator) { op.RevokedAt = nil })
			return err
		}, nil
	})
	return out, err
}

// revoke marks an operator revoked and reports whether it was not yet.
func (o *Operators) revoke(ctx context.Context, id string) (Operator, bool, error) {
	now := o.s.now().UTC()
	changed := false
	op, err := update(ctx, o.s, operatorTenant, operatorKeyPrefix+id, func(op *Operator) {
		if changed = op.RevokedAt == nil; changed {
			op.RevokedAt = &now
		}
	})
	return op.Public(), changed, err
}

// adminGuardKey is the record whose revision orders the changes that may
// leave no way to act as an admin (guarded).
const adminGuardKey = "adminguard"

// guardAttempts bounds how often guarded retries a change that lost the
// race to another.
const guardAttempts = 20

// guarded runs change, which may take away a way to act as an admin (the
// revocation of an admin, the bootstrap key's retirement), so that such
// changes made at once, on any node, are ordered: it reads the guard's
// revision before change checks what it needs, and moves the guard on
// after the change; when another change moved it meanwhile, the change is
// undone (undo, nil when nothing changed) and made again over what the
// other left.
func (o *Operators) guarded(ctx context.Context, change func() (undo func() error, err error)) error {
	kv, err := o.s.bucket(ctx, operatorTenant)
	if err != nil {
		return err
	}
	for range guardAttempts {
		var rev uint64
		switch e, err := kv.Get(ctx, adminGuardKey); {
		case err == nil:
			rev = e.Revision()
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return fmt.Errorf("credential: read the admin guard: %w", err)
		}
		undo, err := change()
		if err != nil || undo == nil {
			return err
		}
		if rev == 0 {
			_, err = kv.Create(ctx, adminGuardKey, []byte("1"))
		} else {
			_, err = kv.Update(ctx, adminGuardKey, []byte("1"), rev)
		}
		if err == nil {
			return nil
		}
		if uerr := undo(); uerr != nil {
			return fmt.Errorf("credential: undo a change that lost to another: %w", errors.Join(err, uerr))
		}
		if !kverr.Conflict(err) {
			return fmt.Errorf("credential: move the admin guard: %w", err)
		}
	}
	return ErrOperatorBusy.New()
}

// Verify authenticates a named operator's token: it must be the current
// secret of an operator neither revoked nor expired, read from the bucket
// on each call, so that a revocation or rotation made on any node takes
// effect on the next request. An operator whose id exists is returned
// (id, name and role) even when refused, for the audit log.
func (o *Operators) Verify(ctx context.Context, token string) (Operator, error) {
	id, secret, ok := ParseToken(operatorPrefix, token)
	if !ok {
		return Operator{}, ErrInvalid.Wrap(errMalformedToken)
	}
	op, _, err := get[Operator](ctx, o.s, operatorTenant, operatorKeyPrefix+id)
	if ErrNotFound.Is(err) {
		return Operator{}, ErrInvalid.New()
	}
	if err != nil {
		return Operator{}, err
	}
	known := Operator{Operator: client.Operator{ID: op.ID, Name: op.Name, Role: op.Role}}
	if !SecretMatches(operatorDomain, secret, op.Hash) {
		return known, ErrInvalid.New()
	}
	if !op.Active(o.s.now()) {
		return known, ErrInvalid.WithDetail("the operator is revoked or expired")
	}
	return op.Public(), nil
}

// activeAdmins counts the active, unexpired admins other than except.
func (o *Operators) activeAdmins(ctx context.Context, except string) (int, error) {
	ops, err := o.List(ctx)
	if err != nil {
		return 0, err
	}
	now, n := o.s.now(), 0
	for _, op := range ops {
		if op.ID != except && op.Role == RoleAdmin && op.Active(now) {
			n++
		}
	}
	return n, nil
}

// Bootstrap returns the state of the bootstrap key as stored.
func (o *Operators) Bootstrap(ctx context.Context) (client.BootstrapOperator, error) {
	rec, _, err := get[bootstrapRecord](ctx, o.s, operatorTenant, bootstrapKey)
	if ErrNotFound.Is(err) {
		return client.BootstrapOperator{}, nil
	}
	if err != nil {
		return client.BootstrapOperator{}, err
	}
	at := rec.RetiredAt
	return client.BootstrapOperator{Retired: true, RetiredAt: &at, RetiredBy: rec.RetiredBy}, nil
}

func (o *Operators) bootstrapRetired(ctx context.Context) (bool, error) {
	b, err := o.Bootstrap(ctx)
	return b.Retired, err
}

// RetireBootstrap retires the bootstrap key on every node (they follow
// the record, WatchBootstrap). It is refused (ErrOperatorLockout) unless
// an active, unexpired named admin exists. Retiring it again answers the
// first retirement.
func (o *Operators) RetireBootstrap(ctx context.Context, by string) (client.BootstrapOperator, error) {
	if cur, err := o.Bootstrap(ctx); err != nil || cur.Retired {
		return cur, err
	}
	kv, err := o.s.bucket(ctx, operatorTenant)
	if err != nil {
		return client.BootstrapOperator{}, err
	}
	var out client.BootstrapOperator
	err = o.guarded(ctx, func() (func() error, error) {
		if n, err := o.activeAdmins(ctx, ""); err != nil {
			return nil, err
		} else if n == 0 {
			return nil, ErrOperatorLockout.WithDetail("create an %s first (iotransit operator create)", RoleAdmin)
		}
		rec := bootstrapRecord{RetiredAt: o.s.now().UTC(), RetiredBy: by}
		b, err := json.Marshal(rec)
		if err != nil {
			return nil, err
		}
		rev, err := kv.Create(ctx, bootstrapKey, b)
		if errors.Is(err, jetstream.ErrKeyExists) { // retired meanwhile
			out, err = o.Bootstrap(ctx)
			return nil, err
		}
		if err != nil {
			return nil, fmt.Errorf("credential: retire bootstrap: %w", err)
		}
		out = client.BootstrapOperator{Retired: true, RetiredAt: &rec.RetiredAt, RetiredBy: by}
		return func() error { return kv.Delete(ctx, bootstrapKey, jetstream.LastRevision(rev)) }, nil
	})
	if err != nil {
		return client.BootstrapOperator{}, err
	}
	o.retired.Store(true)
	return out, nil
}

// ResetBootstrap makes the bootstrap key work again (recovery: serve
// --reset-bootstrap-operator, by whoever runs the node).
func (o *Operators) ResetBootstrap(ctx context.Context) error {
	kv, err := o.s.bucket(ctx, operatorTenant)
	if err != nil {
		return err
	}
	if err := kv.Delete(ctx, bootstrapKey); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("credential: reset bootstrap: %w", err)
	}
	o.retired.Store(false)
	return nil
}

// BootstrapRetired reports whether the bootstrap key is retired, as last
// seen by WatchBootstrap (or set here by RetireBootstrap).
func (o *Operators) BootstrapRetired() bool { return o.retired.Load() }

// WatchBootstrap follows the bootstrap record until ctx ends, so that a
// retirement made on any node applies here within the watch's delay. It
// returns once the current state is known.
func (o *Operators) WatchBootstrap(ctx context.Context) error {
	kv, err := o.s.bucket(ctx, operatorTenant)
	if err != nil {
		return err
	}
	w, err := kv.Watch(ctx, bootstrapKey)
	if err != nil {
		return fmt.Errorf("credential: watch bootstrap: %w", err)
	}
	apply := func(e jetstream.KeyValueEntry) {
		o.retired.Store(e.Operation() == jetstream.KeyValuePut)
	}
	// The current value, then nil once it is delivered.
	for e := range w.Updates() {
		if e == nil {
			break
		}
		apply(e)
	}
	go func() {
		defer func() { _ = w.Stop() }()
		for e := range w.Updates() {
			if e != nil {
				apply(e)
			}
		}
	}()
	return nil
}
