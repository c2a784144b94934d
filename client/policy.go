package client

import (
	"context"
	"net/http"
)

// Policy is a tenant's security policy (GET and PUT
// /v1/tenants/{tenant}/policy): every member is optional, and one left out
// takes the node's default (PolicyView.Effective shows which). Only the
// operator sets it; a tenant credential reads it.
type Policy struct {
	// StrictValidation refuses Thingsee messages whose tsmId has no schema
	// (stored as rejected, code thingsee.unknown_id). Default: the
	// tenant record's rejectUnknownIds (false unless set before policies
	// existed).
	StrictValidation *bool `json:"strictValidation,omitempty"`
	// Quotas bound what the tenant may use.
	Quotas *Quotas `json:"quotas,omitempty"`
	// Integrations restricts where the tenant's integrations deliver.
	Integrations *IntegrationPolicy `json:"integrations,omitempty"`
	// CertificateValidity is the longest lifetime of a gateway certificate
	// issued to the tenant, at most the node's --cert-validity (which
	// applies when it is left out).
	CertificateValidity *Duration `json:"certificateValidity,omitempty"`
	// APIKeyMaxLifetime is the longest lifetime of an API key or OAuth2
	// client the tenant creates: one asked without a ttl gets it, one asked
	// with a longer ttl is refused (policy.violation). Default: no bound.
	APIKeyMaxLifetime *Duration `json:"apiKeyMaxLifetime,omitempty"`
	// Retention bounds how long and how much of the tenant's accepted
	// messages its message stream keeps; the oldest go first.
	Retention *Retention `json:"retention,omitempty"`
	// APIAllowCIDRs are the networks (CIDR, IPv4 or IPv6, e.g.
	// "10.0.0.0/8", "2001:db8::/32") from which the tenant's credentials
	// (API keys, OAuth2 clients and their tokens) are taken: a request
	// from another source address (the TCP peer's; no X-Forwarded-For is
	// trusted) is refused with 403 api.source_not_allowed and audited.
	// Left out or empty: from anywhere. It binds neither the operator nor
	// the gateways' mutual-TLS routes (enroll, reenroll, firmware).
	APIAllowCIDRs []string `json:"apiAllowCIDRs,omitempty"`
}

// Retention is how long and how much of a tenant's messages, rejected
// messages, dead letters and audit entries are kept, enforced by the
// limits of their streams on every node. A member left out takes the
// node's (--retention, --max-tenant-bytes, --dead-letter-retention).
// Lowering one discards the older messages at once, delivered by the
// integrations or not.
type Retention struct {
	// MessagesMaxAge is the age past which messages are discarded (at
	// least 1h).
	MessagesMaxAge *Duration `json:"messagesMaxAge,omitempty"`
	// MessagesMaxBytes bounds the message stream's size in bytes (at least
	// 1 MiB).
	MessagesMaxBytes *int64 `json:"messagesMaxBytes,omitempty"`
	// RejectedMaxAge is the age past which rejected messages are
	// discarded (at least 1h; default the node's, 30 days).
	RejectedMaxAge *Duration `json:"rejectedMaxAge,omitempty"`
	// DeadLettersMaxAge is the age past which the dead letters of the
	// tenant's integrations are discarded, re-driven or not (at least 1h;
	// default the node's --dead-letter-retention).
	DeadLettersMaxAge *Duration `json:"deadLettersMaxAge,omitempty"`
	// AuditMinAge is how long the tenant's audit entries are kept (its
	// audit stream's age limit): at least the node's audit retention, the
	// platform's minimum (a shorter one is refused, policy.invalid; while
	// the node keeps audit entries for ever, every value is). Default the
	// node's.
	AuditMinAge *Duration `json:"auditMinAge,omitempty"`
}

// Quotas bound a tenant's use. A member left out takes the node's default
// (for the counts: no bound).
type Quotas struct {
	// IngestMsgsPerSecond is the sustained Thingsee messages per second of
	// each gateway (the node's --msg-rate), IngestBurst the burst above it
	// (--msg-burst). A gateway over it gets PUBACK 0x96.
	IngestMsgsPerSecond *float64 `json:"ingestMsgsPerSecond,omitempty"`
	IngestBurst         *int     `json:"ingestBurst,omitempty"`
	// ConcurrentConnections bounds the tenant's gateway connections on each
	// node (--max-conns-per-tenant); one more gets CONNACK 0x97.
	ConcurrentConnections *int `json:"concurrentConnections,omitempty"`
	// Gateways, Integrations and APIKeys bound how many the tenant holds
	// (APIKeys counts its API keys and OAuth2 clients that are neither
	// revoked nor expired); creating one more is refused
	// (policy.quota_exceeded).
	Gateways     *int `json:"gateways,omitempty"`
	Integrations *int `json:"integrations,omitempty"`
	APIKeys      *int `json:"apiKeys,omitempty"`
	// StoredBytes bounds the bytes the tenant's message stream holds, and
	// its rejected stream, each (at least 1 MiB; default the node's
	// --tenant-stored-bytes, else none). When one is full, new messages
	// are refused (the gateway gets PUBACK 0x97 and keeps them; MQTT
	// 3.1.1: the connection is closed without an acknowledgement) and
	// counted, while what is stored stays until its retention ages it
	// out: nothing acknowledged is discarded. Not with
	// retention.messagesMaxBytes.
	StoredBytes *int64 `json:"storedBytes,omitempty"`
}

// IntegrationPolicy restricts a tenant's integrations; an integration
// against it is refused when created or changed (policy.violation). One
// made before the policy that it forbids is paused by the PUT that sets
// the policy (audited as forward.integration.pause with the rule), and
// resume, test, retry-now and redrive of it are refused until it is
// changed to comply; its messages wait in its backlog meanwhile.
type IntegrationPolicy struct {
	// AllowedTypes are the integration types the tenant may create
	// (IntegrationTypes); left out, every type.
	AllowedTypes []string `json:"allowedTypes,omitempty"`
	// AllowedHosts are the hosts integrations may deliver to (and fetch
	// OAuth2 tokens from): an exact host name or address, or "*.example.com"
	// for any name under example.com (not example.com itself); no scheme,
	// port or path. Left out, any host (the node's egress rules still
	// apply).
	AllowedHosts []string `json:"allowedHosts,omitempty"`
	// RequireAuth makes every delivering integration authenticate to its
	// endpoint: a webhook with auth (apikey, oauth2 or mtls) or a client
	// certificate, an MQTT integration with a username or a client
	// certificate; Azure IoT Hub (device key) and AWS IoT (certificate)
	// always do.
	RequireAuth *bool `json:"requireAuth,omitempty"`
}

// PolicyView is the answer of GET and PUT /v1/tenants/{tenant}/policy.
type PolicyView struct {
	Tenant string `json:"tenant"`
	// Policy is what the operator set (members left out take the node's
	// default).
	Policy Policy `json:"policy"`
	// Effective is what this node applies: Policy with every member left
	// out filled with the node's default; a count quota left out stays
	// out (no bound), as do allowedTypes and allowedHosts (all).
	Effective Policy `json:"effective"`
	// Defaults names the members left out of Policy, whose value in
	// Effective is the node's default (e.g. "quotas.ingestMsgsPerSecond"),
	// or no bound for the members without one (e.g. "quotas.gateways").
	Defaults []string `json:"defaults"`
	// Usage is what the tenant uses of its bounds now (nil when the node
	// cannot read it).
	Usage *PolicyUsage `json:"usage,omitempty"`
}

// PolicyUsage is what a tenant uses of its policy's bounds.
type PolicyUsage struct {
	StoredBytes StoredBytesUsage `json:"storedBytes"`
}

// StoredBytesUsage is a tenant's stored-bytes quota and its use.
type StoredBytesUsage struct {
	// Limit is the quota of the message stream and of the rejected
	// stream, each (0: none).
	Limit int64 `json:"limit"`
	// Used is what the message stream holds, RejectedUsed the rejected
	// stream, in bytes.
	Used         int64 `json:"used"`
	RejectedUsed int64 `json:"rejectedUsed"`
	// Refused counts the uploads refused because a stream was full, by the
	// node that answers, since it started (the metric
	// iotransit_ingest_quota_refusals_total counts them too).
	Refused uint64 `json:"refused"`
}

// GetPolicy returns a tenant's security policy and what this node
// applies.
func (c *Client) GetPolicy(ctx context.Context, tenant string) (*PolicyView, error) {
	return get[PolicyView](ctx, c, path("tenants", tenant, "policy"), nil)
}

// SetPolicy replaces a tenant's security policy (operator only). It takes
// effect on every node within a second.
func (c *Client) SetPolicy(ctx context.Context, tenant string, p Policy) (*PolicyView, error) {
	return call[PolicyView](ctx, c, request{method: http.MethodPut, path: path("tenants", tenant, "policy"), body: p, auth: true})
}
