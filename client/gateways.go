package client

import (
	"context"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Gateway states.
const (
	// GatewayActive gateways may connect and publish.
	GatewayActive = "active"
	// GatewayIsolated gateways are refused until made active again.
	GatewayIsolated = "isolated"
	// GatewayRevoked gateways are refused for good; all their certificates
	// are revoked.
	GatewayRevoked = "revoked"
)

// Certificate statuses.
const (
	CertificateValid   = "valid"
	CertificateExpired = "expired"
	CertificateRevoked = "revoked"
)

// Gateway is a device that uploads over MQTT; its serial is its
// certificates' common name.
type Gateway struct {
	Tenant string `json:"tenant"`
	// Serial is 17 characters in Thingsee TUID form, e.g. TSGW06DEV00000042.
	Serial string `json:"serial"`
	// State is GatewayActive, GatewayIsolated or GatewayRevoked.
	State string `json:"state"`
	// Connected says whether the gateway has a live MQTT session on the
	// node that answered.
	Connected bool              `json:"connected"`
	CreatedAt time.Time         `json:"createdAt"`
	UpdatedAt time.Time         `json:"updatedAt"`
	Labels    map[string]string `json:"labels"`
	// DeploymentGroupID is the gateway's Thingsee deployment group, "" for
	// none.
	DeploymentGroupID string `json:"deploymentGroupId,omitempty"`
	// CertificateExpiry is the latest expiry among the gateway's valid
	// certificates; nil when none is valid.
	CertificateExpiry *time.Time `json:"certificateExpiry,omitempty"`
	// Certificates are those issued to the gateway, oldest first.
	Certificates []Certificate `json:"certificates"`
	// LastSeen is when the gateway last connected, sent its status or
	// uploaded (written at a bounded rate: up to 30 s older on a node the
	// gateway is not connected to); absent when never seen.
	LastSeen *time.Time `json:"lastSeen,omitempty"`
	// AgentVersion, Firmware, QueueDepth, QueueDropped and Mesh come from
	// the gateway's last status; absent before its first.
	AgentVersion string           `json:"agentVersion,omitempty"`
	Firmware     *GatewayFirmware `json:"firmware,omitempty"`
	QueueDepth   *int             `json:"queueDepth,omitempty"`
	QueueDropped *uint64          `json:"queueDropped,omitempty"`
	Mesh         *GatewayMesh     `json:"mesh,omitempty"`
	// StatusAt is when the last status arrived.
	StatusAt *time.Time `json:"statusAt,omitempty"`
}

// GatewayFirmware is the firmware a gateway reports running.
type GatewayFirmware struct {
	Version string `json:"version,omitempty"`
	// Slot is the active A/B slot, "a" or "b".
	Slot string `json:"slot,omitempty"`
}

// GatewayMesh counts the mesh frames a gateway took and dropped, by
// reason (replay, forged, truncated, malformed, unknown_node, stale_epoch,
// unknown_network).
type GatewayMesh struct {
	Accepted uint64            `json:"accepted"`
	Dropped  map[string]uint64 `json:"dropped,omitempty"`
}

// Certificate is a certificate issued to a gateway.
type Certificate struct {
	// Serial is the certificate serial number, lowercase hex.
	Serial string `json:"serial"`
	// Fingerprint is the SHA-256 of the certificate DER, lowercase hex.
	Fingerprint string     `json:"fingerprint"`
	NotBefore   time.Time  `json:"notBefore"`
	NotAfter    time.Time  `json:"notAfter"`
	IssuedAt    time.Time  `json:"issuedAt"`
	RevokedAt   *time.Time `json:"revokedAt,omitempty"`
	// Status is CertificateValid, CertificateExpired or CertificateRevoked.
	Status string `json:"status"`
}

// RegisterGatewayRequest is the body of POST /v1/tenants/{tenant}/gateways.
type RegisterGatewayRequest struct {
	Serial string `json:"serial"`
	// Labels are at most 32 key=value labels.
	Labels map[string]string `json:"labels,omitempty"`
}

// UpdateGatewayRequest is the body of PATCH
// /v1/tenants/{tenant}/gateways/{serial}: a nil member changes nothing.
type UpdateGatewayRequest struct {
	// Labels replace all of the gateway's labels.
	Labels *map[string]string `json:"labels,omitempty"`
	// SetLabels sets these labels and RemoveLabels removes these (by
	// key), keeping the others, in one change on the server: a change
	// made at the same time by someone else is not lost. Not with Labels;
	// a key may not be in both.
	SetLabels    map[string]string `json:"setLabels,omitempty"`
	RemoveLabels []string          `json:"removeLabels,omitempty"`
	// DeploymentGroupID sets the deployment group; "" clears it.
	DeploymentGroupID *string `json:"deploymentGroupId,omitempty"`
}

// GatewayQuery selects a page of gateways, by serial.
type GatewayQuery struct {
	// State keeps only gateways in this state ("" for all).
	State string
	// Limit is the page size, 1 to 1000 (0: the server's default, 100).
	Limit int
	// After starts after this serial: a previous page's Next.
	After string
}

func (q GatewayQuery) values() url.Values {
	v := url.Values{}
	setString(v, "state", q.State)
	setInt(v, "limit", q.Limit)
	setString(v, "after", q.After)
	return v
}

// RegisterGateway registers a gateway with a tenant; it can then get a
// certificate through an enrollment token. Operator only: a tenant adds a
// gateway with ClaimGateway.
func (c *Client) RegisterGateway(ctx context.Context, tenant string, req RegisterGatewayRequest) (*Gateway, error) {
	return post[Gateway](ctx, c, path("tenants", tenant, "gateways"), req)
}

// ListGateways returns a page of a tenant's gateways, ordered by serial.
func (c *Client) ListGateways(ctx context.Context, tenant string, q GatewayQuery) (*Page[Gateway], error) {
	return get[Page[Gateway]](ctx, c, path("tenants", tenant, "gateways"), q.values())
}

// AllGateways walks every page of a tenant's gateways from q.After on.
func (c *Client) AllGateways(ctx context.Context, tenant string, q GatewayQuery) iter.Seq2[Gateway, error] {
	return walk(ctx, q.After, func(ctx context.Context, after string) (*Page[Gateway], error) {
		q.After = after
		return c.ListGateways(ctx, tenant, q)
	})
}

// GetGateway returns a gateway with its certificates.
func (c *Client) GetGateway(ctx context.Context, tenant, serial string) (*Gateway, error) {
	return get[Gateway](ctx, c, path("tenants", tenant, "gateways", serial), nil)
}

// UpdateGateway changes a gateway's labels or deployment group.
func (c *Client) UpdateGateway(ctx context.Context, tenant, serial string, req UpdateGatewayRequest) (*Gateway, error) {
	return call[Gateway](ctx, c, request{method: http.MethodPatch, path: path("tenants", tenant, "gateways", serial), body: req, auth: true})
}

// IsolateGateway refuses a gateway's connections until ActivateGateway;
// its live sessions are dropped.
func (c *Client) IsolateGateway(ctx context.Context, tenant, serial string) (*Gateway, error) {
	return post[Gateway](ctx, c, path("tenants", tenant, "gateways", serial, "isolate"), nil)
}

// ActivateGateway lets an isolated gateway connect again.
func (c *Client) ActivateGateway(ctx context.Context, tenant, serial string) (*Gateway, error) {
	return post[Gateway](ctx, c, path("tenants", tenant, "gateways", serial, "activate"), nil)
}

// RevokeGateway refuses a gateway for good and revokes its certificates;
// its live sessions are dropped.
func (c *Client) RevokeGateway(ctx context.Context, tenant, serial string) (*Gateway, error) {
	return post[Gateway](ctx, c, path("tenants", tenant, "gateways", serial, "revoke"), nil)
}

// DeleteGateway deletes a gateway; its serial may be registered again.
func (c *Client) DeleteGateway(ctx context.Context, tenant, serial string) error {
	return c.noContent(ctx, request{method: http.MethodDelete, path: path("tenants", tenant, "gateways", serial), auth: true})
}

// ListCertificates lists the certificates issued to a gateway, newest
// first.
func (c *Client) ListCertificates(ctx context.Context, tenant, serial string) ([]Certificate, error) {
	return items(get[List[Certificate]](ctx, c, path("tenants", tenant, "gateways", serial, "certificates"), nil))
}

// EnrollmentToken is a one-time secret that lets a gateway of a given
// serial get its first certificate (Enroll).
type EnrollmentToken struct {
	// Token is the secret (iet_…), only in the answer that creates it.
	Token     string    `json:"token,omitempty"`
	ID        string    `json:"id"`
	Tenant    string    `json:"tenant"`
	Serial    string    `json:"serial"`
	CreatedAt time.Time `json:"createdAt"`
	// CreatedBy is the actor that created the token, e.g. operator or
	// apikey:<id>.
	CreatedBy string    `json:"createdBy,omitempty"`
	ExpiresAt time.Time `json:"expiresAt"`
	// UsedAt is when the token was spent; nil while unused.
	UsedAt *time.Time `json:"usedAt,omitempty"`
	// RevokedAt is when the token was revoked (RevokeEnrollmentToken);
	// nil while not.
	RevokedAt *time.Time `json:"revokedAt,omitempty"`
	// State is what the token can do at the time of the answer: TokenValid
	// (it enrolls its gateway), TokenUsed, TokenExpired or TokenRevoked.
	State TokenState `json:"state"`
}

// TokenState is the state of an enrollment token.
type TokenState string

// Enrollment token states; only a TokenValid token enrolls. A token both
// revoked and used (or expired) is TokenRevoked, and one used is TokenUsed
// even after its expiry.
const (
	TokenValid   TokenState = "valid"
	TokenUsed    TokenState = "used"
	TokenExpired TokenState = "expired"
	TokenRevoked TokenState = "revoked"
)

// CreateEnrollmentTokenRequest is the body of POST
// /v1/tenants/{tenant}/enrollment-tokens.
type CreateEnrollmentTokenRequest struct {
	// Serial is the registered, active gateway the token is for.
	Serial string `json:"serial"`
	// TTL is how long the token lives, a Go duration from 1m to 720h such
	// as "24h" (time.Duration.String); "" for the default, 24h.
	TTL string `json:"ttl,omitempty"`
}

// CreateEnrollmentToken makes a one-time enrollment token for a gateway.
func (c *Client) CreateEnrollmentToken(ctx context.Context, tenant string, req CreateEnrollmentTokenRequest) (*EnrollmentToken, error) {
	return post[EnrollmentToken](ctx, c, path("tenants", tenant, "enrollment-tokens"), req)
}

// ListEnrollmentTokens lists a tenant's enrollment tokens (without their
// secrets).
func (c *Client) ListEnrollmentTokens(ctx context.Context, tenant string) ([]EnrollmentToken, error) {
	return items(get[List[EnrollmentToken]](ctx, c, path("tenants", tenant, "enrollment-tokens"), nil))
}

// RevokeEnrollmentToken revokes an enrollment token at once: it enrolls
// nothing afterwards (registry.token_revoked). Revoking a revoked token
// changes nothing.
func (c *Client) RevokeEnrollmentToken(ctx context.Context, tenant, id string) (*EnrollmentToken, error) {
	return post[EnrollmentToken](ctx, c, path("tenants", tenant, "enrollment-tokens", id, "revoke"), nil)
}

// setString sets a query parameter when v is not "".
func setString(q url.Values, key, v string) {
	if v != "" {
		q.Set(key, v)
	}
}

// setInt sets a query parameter when v is not 0.
func setInt(q url.Values, key string, v int) {
	if v != 0 {
		q.Set(key, strconv.Itoa(v))
	}
}

// setTime sets a query parameter when t is not zero.
func setTime(q url.Values, key string, t time.Time) {
	if !t.IsZero() {
		q.Set(key, t.Format(time.RFC3339Nano))
	}
}
