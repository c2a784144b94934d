package client

import (
	"context"
	"time"
)

// Operator roles: what a named operator credential may do. The bootstrap
// key of the data directory (operator.key) can do what RoleAdmin can.
const (
	// RoleAdmin may do everything the bootstrap key can, including
	// managing operators and retiring the bootstrap key.
	RoleAdmin = "operator:admin"
	// RoleProvisioning does factory work: creates and lists tenants,
	// registers and provisions gateways, makes their enrollment tokens and
	// reads tenants' gateway metadata.
	RoleProvisioning = "operator:provisioning"
	// RoleReadonly reads operator routes (tenants, metrics) and tenants'
	// metadata, never customer data (messages, rejected messages, the
	// stream, dead letters).
	RoleReadonly = "operator:readonly"
	// RoleMetrics reads GET /metrics only.
	RoleMetrics = "operator:metrics"
)

// Roles lists every operator role.
var Roles = []string{RoleAdmin, RoleProvisioning, RoleReadonly, RoleMetrics}

// Operator is a named operator credential, never with its hash.
type Operator struct {
	// Key is the bearer token (ito_…), only in the answers that create
	// the operator or rotate its key.
	Key       string    `json:"key,omitempty"`
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"createdAt"`
	CreatedBy string    `json:"createdBy,omitempty"`
	// ExpiresAt is nil when the credential does not expire.
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
	// RotatedAt is the last rotation of the key, nil if never rotated.
	RotatedAt *time.Time `json:"rotatedAt,omitempty"`
	RevokedAt *time.Time `json:"revokedAt,omitempty"`
}

// CreateOperatorRequest is the body of POST /v1/operators.
type CreateOperatorRequest struct {
	// Name names the operator in audit entries (operator:NAME): 1 to 64 of
	// a-z, 0-9, '-' and '_', starting with a letter or digit, never used
	// before by another operator.
	Name string `json:"name"`
	// Role is one of Roles.
	Role string `json:"role"`
	// TTL is the credential's lifetime, a Go duration from 1m to 2 years
	// such as "720h"; "" for one that does not expire.
	TTL string `json:"ttl,omitempty"`
}

// BootstrapOperator is the state of the data directory's operator key.
type BootstrapOperator struct {
	Retired   bool       `json:"retired"`
	RetiredAt *time.Time `json:"retiredAt,omitempty"`
	RetiredBy string     `json:"retiredBy,omitempty"`
}

// CreateOperator creates a named operator; its key is in the answer, once.
func (c *Client) CreateOperator(ctx context.Context, req CreateOperatorRequest) (*Operator, error) {
	return post[Operator](ctx, c, path("operators"), req)
}

// ListOperators lists the named operators, revoked ones included.
func (c *Client) ListOperators(ctx context.Context) ([]Operator, error) {
	return items(get[List[Operator]](ctx, c, path("operators"), nil))
}

// GetOperator returns a named operator.
func (c *Client) GetOperator(ctx context.Context, id string) (*Operator, error) {
	return get[Operator](ctx, c, path("operators", id), nil)
}

// RotateOperator gives an operator a new key, in the answer once; the old
// key stops working at once.
func (c *Client) RotateOperator(ctx context.Context, id string) (*Operator, error) {
	return post[Operator](ctx, c, path("operators", id, "rotate"), nil)
}

// RevokeOperator revokes an operator at once.
func (c *Client) RevokeOperator(ctx context.Context, id string) (*Operator, error) {
	return post[Operator](ctx, c, path("operators", id, "revoke"), nil)
}

// RetireBootstrapOperator retires the data directory's operator key on
// every node; it is refused unless an active named admin exists.
func (c *Client) RetireBootstrapOperator(ctx context.Context) (*BootstrapOperator, error) {
	return post[BootstrapOperator](ctx, c, path("operators", "bootstrap", "retire"), nil)
}
