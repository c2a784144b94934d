package client

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Scopes a tenant credential may hold.
const (
	ScopeGatewaysRead     = "gateways:read"
	ScopeGatewaysWrite    = "gateways:write"
	ScopeMessagesRead     = "messages:read"
	ScopeKeysRead         = "keys:read"
	ScopeKeysWrite        = "keys:write"
	ScopeAuditRead        = "audit:read"
	ScopeIntegrationsRead = "integrations:read"
	// ScopeIntegrationsWrite manages integrations. Whatever sends the
	// tenant's messages somewhere (creating an integration that delivers,
	// changing where one delivers, re-driving dead letters) needs
	// ScopeMessagesRead as well.
	ScopeIntegrationsWrite = "integrations:write"
	// ScopeMeshRead reads the tenant's mesh network (key epochs, never
	// keys) and authorized node list; ScopeMeshWrite creates, rotates and
	// exports the mesh keys and changes the node list.
	ScopeMeshRead  = "mesh:read"
	ScopeMeshWrite = "mesh:write"
	// ScopeFirmwareRead reads the tenant's firmware repository and rollouts.
	ScopeFirmwareRead = "firmware:read"
	// ScopeFirmwareWrite sets up the firmware repository, publishes
	// firmware (signed by the publisher's offline targets key) and starts
	// rollouts.
	ScopeFirmwareWrite = "firmware:write"
	// ScopeMessagesErase erases a sensor's stored data: its messages,
	// re-driven copies, dead letters and rejected messages (GDPR Art. 17).
	// It reads nothing: an erasure answers only counts.
	ScopeMessagesErase = "messages:erase"
)

// Scopes lists every scope a tenant credential may hold.
var Scopes = []string{
	ScopeGatewaysRead, ScopeGatewaysWrite, ScopeMessagesRead, ScopeKeysRead,
	ScopeKeysWrite, ScopeAuditRead, ScopeIntegrationsRead, ScopeIntegrationsWrite,
	ScopeMeshRead, ScopeMeshWrite,
	ScopeFirmwareRead, ScopeFirmwareWrite,
	ScopeMessagesErase,
}

// APIKey is a tenant's API key, never with its hash.
type APIKey struct {
	// Key is the bearer token (itk_…), only in the answer that creates it.
	Key       string    `json:"key,omitempty"`
	ID        string    `json:"id"`
	Tenant    string    `json:"tenant"`
	Name      string    `json:"name,omitempty"`
	Scopes    []string  `json:"scopes"`
	CreatedAt time.Time `json:"createdAt"`
	CreatedBy string    `json:"createdBy,omitempty"`
	// ExpiresAt is nil when the key does not expire; never later than the
	// expiry of the credential that created it.
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
	// LastUsedAt is the last use, recorded at most once a minute.
	LastUsedAt *time.Time `json:"lastUsedAt,omitempty"`
	RevokedAt  *time.Time `json:"revokedAt,omitempty"`
}

// CreateAPIKeyRequest is the body of POST /v1/tenants/{tenant}/api-keys.
type CreateAPIKeyRequest struct {
	// Name is for people, at most 64 printable characters.
	Name string `json:"name,omitempty"`
	// Scopes are what the key may do, a subset of the caller's.
	Scopes []string `json:"scopes"`
	// TTL is the key's lifetime, a Go duration from 1m to 2 years such as
	// "720h" (time.Duration.String); "" for a key that does not expire
	// (unless the caller's own credential does).
	TTL string `json:"ttl,omitempty"`
}

// CreateAPIKey creates an API key; its secret is in the answer, once.
func (c *Client) CreateAPIKey(ctx context.Context, tenant string, req CreateAPIKeyRequest) (*APIKey, error) {
	return post[APIKey](ctx, c, path("tenants", tenant, "api-keys"), req)
}

// ListAPIKeys lists a tenant's API keys.
func (c *Client) ListAPIKeys(ctx context.Context, tenant string) ([]APIKey, error) {
	return items(get[List[APIKey]](ctx, c, path("tenants", tenant, "api-keys"), nil))
}

// GetAPIKey returns an API key.
func (c *Client) GetAPIKey(ctx context.Context, tenant, id string) (*APIKey, error) {
	return get[APIKey](ctx, c, path("tenants", tenant, "api-keys", id), nil)
}

// RevokeAPIKey revokes an API key at once.
func (c *Client) RevokeAPIKey(ctx context.Context, tenant, id string) (*APIKey, error) {
	return post[APIKey](ctx, c, path("tenants", tenant, "api-keys", id, "revoke"), nil)
}

// OAuth2Client is a tenant's OAuth2 client (client credentials grant),
// never with its hash.
type OAuth2Client struct {
	// ClientSecret is the secret (its_…), only in the answer that creates
	// the client.
	ClientSecret string    `json:"clientSecret,omitempty"`
	ID           string    `json:"clientId"`
	Tenant       string    `json:"tenant"`
	Name         string    `json:"name,omitempty"`
	Scopes       []string  `json:"scopes"`
	CreatedAt    time.Time `json:"createdAt"`
	CreatedBy    string    `json:"createdBy,omitempty"`
	// ExpiresAt is when the client expires (its TTL, or the expiry of the
	// credential that made it, whichever is first); nil: never. The client
	// then gets no tokens and its tokens stop working.
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
	RevokedAt *time.Time `json:"revokedAt,omitempty"`
}

// CreateOAuth2ClientRequest is the body of POST
// /v1/tenants/{tenant}/oauth2-clients.
type CreateOAuth2ClientRequest struct {
	// Name is for people, at most 64 printable characters.
	Name string `json:"name,omitempty"`
	// Scopes are what the client's tokens may do, a subset of the caller's.
	Scopes []string `json:"scopes"`
	// TTL is the client's lifetime, a Go duration from 1m to 2 years such
	// as "720h" (time.Duration.String); "" for a client that does not
	// expire (unless the caller's own credential does). An expired client
	// gets no tokens, and its tokens stop working.
	TTL string `json:"ttl,omitempty"`
}

// CreateOAuth2Client creates an OAuth2 client; its secret is in the
// answer, once.
func (c *Client) CreateOAuth2Client(ctx context.Context, tenant string, req CreateOAuth2ClientRequest) (*OAuth2Client, error) {
	return post[OAuth2Client](ctx, c, path("tenants", tenant, "oauth2-clients"), req)
}

// ListOAuth2Clients lists a tenant's OAuth2 clients.
func (c *Client) ListOAuth2Clients(ctx context.Context, tenant string) ([]OAuth2Client, error) {
	return items(get[List[OAuth2Client]](ctx, c, path("tenants", tenant, "oauth2-clients"), nil))
}

// GetOAuth2Client returns an OAuth2 client.
func (c *Client) GetOAuth2Client(ctx context.Context, tenant, id string) (*OAuth2Client, error) {
	return get[OAuth2Client](ctx, c, path("tenants", tenant, "oauth2-clients", id), nil)
}

// RevokeOAuth2Client revokes an OAuth2 client; its tokens stop working at
// once.
func (c *Client) RevokeOAuth2Client(ctx context.Context, tenant, id string) (*OAuth2Client, error) {
	return post[OAuth2Client](ctx, c, path("tenants", tenant, "oauth2-clients", id, "revoke"), nil)
}

// Token is an access token from the token endpoint (RFC 6749 §5.1). Its
// members are in the order the server writes them.
type Token struct {
	// AccessToken is a JWT; send it as the credential (WithCredential).
	AccessToken string `json:"access_token"`
	// ExpiresIn is the token's lifetime in seconds.
	ExpiresIn int `json:"expires_in"`
	// Scope lists the token's scopes, space-separated.
	Scope string `json:"scope"`
	// TokenType is "Bearer".
	TokenType string `json:"token_type"`
}

// Token gets an access token for an OAuth2 client (POST /oauth2/token,
// client credentials grant, RFC 6749 §4.4) with HTTP Basic client
// authentication; scopes narrow the client's (none: all of them). A
// refusal is an *OAuthError.
func (c *Client) Token(ctx context.Context, clientID, clientSecret string, scopes ...string) (*Token, error) {
	form := url.Values{"grant_type": {"client_credentials"}}
	if len(scopes) > 0 {
		form.Set("scope", strings.Join(scopes, " "))
	}
	return call[Token](ctx, c, request{method: http.MethodPost, path: "/oauth2/token", form: form, basic: &[2]string{clientID, clientSecret}})
}
