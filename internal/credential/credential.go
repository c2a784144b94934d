// Package credential owns the API credentials of tenants: API keys (the
// secret shown once, stored as a SHA-256 hash, tenant-bound, scoped,
// expiring, revocable, with last use) and OAuth2 clients (client
// credentials grant), plus the short-lived EdDSA-signed JWTs issued to
// those clients. Records live in a JetStream KV bucket per tenant, with a
// global index from credential id to tenant.
package credential

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/backbone/kverr"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/fault"
)

// Scopes. A route declares the one it needs; the operator holds all. They
// are the API's, declared once in the client package.
const (
	ScopeGatewaysRead      = client.ScopeGatewaysRead
	ScopeGatewaysWrite     = client.ScopeGatewaysWrite
	ScopeMessagesRead      = client.ScopeMessagesRead
	ScopeKeysRead          = client.ScopeKeysRead
	ScopeKeysWrite         = client.ScopeKeysWrite
	ScopeAuditRead         = client.ScopeAuditRead
	ScopeIntegrationsRead  = client.ScopeIntegrationsRead
	ScopeIntegrationsWrite = client.ScopeIntegrationsWrite
	ScopeMeshRead          = client.ScopeMeshRead
	ScopeMeshWrite         = client.ScopeMeshWrite
	ScopeFirmwareRead      = client.ScopeFirmwareRead
	ScopeFirmwareWrite     = client.ScopeFirmwareWrite
	ScopeMessagesErase     = client.ScopeMessagesErase
)

// TenantScopes are the scopes a tenant credential may hold (client.Scopes).
var TenantScopes = client.Scopes

// Faults a client can see.
var (
	ErrScopeInvalid   = fault.Define("credential.scope_invalid", fault.InvalidArgument, "unknown scope")
	ErrScopeExceeds   = fault.Define("credential.scope_exceeds", fault.PermissionDenied, "a credential can only grant scopes it holds itself")
	ErrNameInvalid    = fault.Define("credential.name_invalid", fault.InvalidArgument, "a name is 1 to 64 printable characters")
	ErrTTLInvalid     = fault.Define("credential.ttl_invalid", fault.InvalidArgument, "expiry must be between 1 minute and 2 years from now")
	ErrNotFound       = fault.Define("credential.not_found", fault.NotFound, "no such credential")
	ErrInvalid        = fault.Define("credential.invalid", fault.Unauthenticated, "the credential is not valid")
	ErrNoScopes       = fault.Define("credential.scopes_required", fault.InvalidArgument, "at least one scope is required")
	ErrCreatorExpired = fault.Define("credential.creator_expired", fault.Unauthenticated, "the credential making this one has expired")
	errMalformedToken = errors.New("credential: malformed token")
)

// APIKey is an API key record: the API's shape (client.APIKey, whose Key
// is never stored) and the secret's Hash, which is never shown.
type APIKey struct {
	client.APIKey
	Hash []byte `json:"hash,omitempty"`
}

// Public returns the key without its hash.
func (k APIKey) Public() APIKey { k.Hash = nil; return k }

// Active reports whether the key may be used at now.
func (k APIKey) Active(now time.Time) bool {
	return k.RevokedAt == nil && (k.ExpiresAt == nil || now.Before(*k.ExpiresAt))
}

// Client is an OAuth2 client (client credentials grant): the API's shape
// (client.OAuth2Client, whose ClientSecret is never stored) and the
// secret's Hash, which is never shown. ExpiresAt is set only on a client
// made by a credential that expires (it never outlives its creator); nil
// means it does not expire.
type Client struct {
	client.OAuth2Client
	Hash []byte `json:"hash,omitempty"`
}

// Public returns the client without its hash.
func (c Client) Public() Client { c.Hash = nil; return c }

// Active reports whether the client may be used at now.
func (c Client) Active(now time.Time) bool {
	return c.RevokedAt == nil && (c.ExpiresAt == nil || now.Before(*c.ExpiresAt))
}

// expiry returns when a credential made at now with ttl (0: none) by a
// creator expiring at notAfter (zero: never) expires: the earlier of the
// two, nil for never. A creator already expired is refused.
func expiry(now time.Time, ttl time.Duration, notAfter time.Time) (*time.Time, error) {
	var exp *time.Time
	if ttl != 0 {
		t := now.Add(ttl)
		exp = &t
	}
	if notAfter.IsZero() {
		return exp, nil
	}
	if !now.Before(notAfter) {
		return nil, ErrCreatorExpired.New()
	}
	if exp == nil || exp.After(notAfter) {
		t := notAfter.UTC()
		exp = &t
	}
	return exp, nil
}

// KVProvider creates or opens KV buckets (backbone.Backbone).
type KVProvider interface {
	KV(ctx context.Context, bucket string, history uint8) (jetstream.KeyValue, error)
}

// Store keeps credential records.
type Store struct {
	kvs   KVProvider
	index jetstream.KeyValue
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]jetstream.KeyValue
	used    map[string]time.Time // last recorded use per key id
}

const (
	apiKeyPrefix  = "itk_"
	clientPrefix  = "itc_"
	secretPrefix  = "its_"
	lastUseWindow = time.Minute
)

// Open opens the credential store.
func Open(ctx context.Context, kvs KVProvider) (*Store, error) {
	idx, err := kvs.KV(ctx, names.CredentialIndexBucket, 1)
	if err != nil {
		return nil, err
	}
	return &Store{kvs: kvs, index: idx, now: time.Now, buckets: map[string]jetstream.KeyValue{}, used: map[string]time.Time{}}, nil
}

func (s *Store) bucket(ctx context.Context, tenant string) (jetstream.KeyValue, error) {
	s.mu.Lock()
	kv, ok := s.buckets[tenant]
	s.mu.Unlock()
	if ok {
		return kv, nil
	}
	kv, err := s.kvs.KV(ctx, names.CredentialsBucket(tenant), 1)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.buckets[tenant] = kv
	s.mu.Unlock()
	return kv, nil
}

// CheckScopes validates requested scopes and that held (the creator's
// scopes; nil means all, for the operator) covers them.
func CheckScopes(requested, held []string) ([]string, error) {
	if len(requested) == 0 {
		return nil, ErrNoScopes.New()
	}
	out := make([]string, 0, len(requested))
	for _, s := range requested {
		if !slices.Contains(TenantScopes, s) {
			return nil, ErrScopeInvalid.WithDetail("%q is not a scope; scopes are %s", truncate(s, 40), strings.Join(TenantScopes, ", "))
		}
		if held != nil && !slices.Contains(held, s) {
			return nil, ErrScopeExceeds.WithDetail("the caller does not hold %s", s)
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// ValidName reports whether a credential name is acceptable (1 to 64
// printable characters, or empty).
func ValidName(name string) bool {
	if len(name) > 64 {
		return false
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// CreateAPIKey makes an API key and returns it with its token, shown once.
// scopes must be covered by held (nil: the operator). ttl 0 means no expiry.
func (s *Store) CreateAPIKey(ctx context.Context, tenant, name string, scopes, held []string, ttl time.Duration, createdBy string) (APIKey, string, error) {
	return s.CreateAPIKeyWithin(ctx, tenant, name, scopes, held, ttl, time.Time{}, createdBy)
}

// CreateAPIKeyWithin is CreateAPIKey for a creator that itself expires at
// notAfter (zero: never): the key expires at notAfter at the latest, even
// when ttl is 0 or longer.
func (s *Store) CreateAPIKeyWithin(ctx context.Context, tenant, name string, scopes, held []string, ttl time.Duration, notAfter time.Time, createdBy string) (APIKey, string, error) {
	n, err := s.mint(name, scopes, held, ttl, notAfter)
	if err != nil {
		return APIKey{}, "", err
	}
	k := APIKey{APIKey: client.APIKey{ID: n.id, Tenant: tenant, Name: name, Scopes: n.scopes, CreatedAt: n.createdAt, CreatedBy: createdBy, ExpiresAt: n.expiresAt}, Hash: n.hash}
	if err := s.put(ctx, tenant, "apikey."+n.id, n.id, k); err != nil {
		return APIKey{}, "", err
	}
	return k.Public(), n.token, nil
}

// minted is what a new API key or OAuth2 client is made of.
type minted struct {
	id        string
	token     string // id and secret as an API key token (NewToken)
	secret    string
	hash      []byte // of secret
	scopes    []string
	createdAt time.Time
	expiresAt *time.Time
}

// mint checks a new credential's name, scopes (covered by held, nil: the
// operator's) and ttl (0: no expiry), and makes its id, secret and times:
// it expires after ttl or at notAfter (zero: never), whichever is first.
func (s *Store) mint(name string, scopes, held []string, ttl time.Duration, notAfter time.Time) (minted, error) {
	if !ValidName(name) {
		return minted{}, ErrNameInvalid.New()
	}
	scopes, err := CheckScopes(scopes, held)
	if err != nil {
		return minted{}, err
	}
	if ttl != 0 && (ttl < time.Minute || ttl > 2*365*24*time.Hour) {
		return minted{}, ErrTTLInvalid.New()
	}
	token, id, secret, err := NewToken(apiKeyPrefix)
	if err != nil {
		return minted{}, err
	}
	now := s.now().UTC()
	exp, err := expiry(now, ttl, notAfter)
	if err != nil {
		return minted{}, err
	}
	return minted{id: id, token: token, secret: secret, hash: HashSecret(secretDomain, secret), scopes: scopes, createdAt: now, expiresAt: exp}, nil
}

func (s *Store) put(ctx context.Context, tenant, key, id string, v any) error {
	kv, err := s.bucket(ctx, tenant)
	if err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := s.index.Create(ctx, id, []byte(tenant)); err != nil {
		return fmt.Errorf("credential: index %s: %w", id, err)
	}
	if _, err := kv.Create(ctx, key, b); err != nil {
		return fmt.Errorf("credential: store %s: %w", id, err)
	}
	return nil
}

func get[T any](ctx context.Context, s *Store, tenant, key string) (T, uint64, error) {
	var v T
	kv, err := s.bucket(ctx, tenant)
	if err != nil {
		return v, 0, err
	}
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return v, 0, ErrNotFound.New()
	}
	if err != nil {
		return v, 0, fmt.Errorf("credential: read %s: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return v, 0, fmt.Errorf("credential: decode %s: %w", key, err)
	}
	return v, e.Revision(), nil
}

// list returns a tenant's records under prefix, oldest first (by
// createdAt), each as public makes it (without its hash).
func list[T any](ctx context.Context, s *Store, tenant, prefix string, createdAt func(T) time.Time, public func(T) T) ([]T, error) {
	kv, err := s.bucket(ctx, tenant)
	if err != nil {
		return nil, err
	}
	lister, err := kv.ListKeysFiltered(ctx, prefix+".>")
	if err != nil {
		return nil, fmt.Errorf("credential: list: %w", err)
	}
	out := []T{}
	for key := range lister.Keys() {
		v, _, err := get[T](ctx, s, tenant, key)
		if err != nil {
			if ErrNotFound.Is(err) {
				continue
			}
			return nil, err
		}
		out = append(out, public(v))
	}
	slices.SortFunc(out, func(a, b T) int { return createdAt(a).Compare(createdAt(b)) })
	return out, nil
}

// update applies fn to a record with optimistic concurrency.
func update[T any](ctx context.Context, s *Store, tenant, key string, fn func(*T)) (T, error) {
	kv, err := s.bucket(ctx, tenant)
	if err != nil {
		var zero T
		return zero, err
	}
	for attempt := 0; ; attempt++ {
		v, rev, err := get[T](ctx, s, tenant, key)
		if err != nil {
			return v, err
		}
		fn(&v)
		b, err := json.Marshal(v)
		if err != nil {
			return v, err
		}
		if _, err := kv.Update(ctx, key, b, rev); err == nil {
			return v, nil
		} else if !kverr.Conflict(err) || attempt >= 10 {
			return v, fmt.Errorf("credential: update %s: %w", key, err)
		}
	}
}

// APIKeys lists a tenant's API keys (without hashes), oldest first.
func (s *Store) APIKeys(ctx context.Context, tenant string) ([]APIKey, error) {
	return list(ctx, s, tenant, "apikey", func(k APIKey) time.Time { return k.CreatedAt }, APIKey.Public)
}

// APIKey returns one API key (without hash).
func (s *Store) APIKey(ctx context.Context, tenant, id string) (APIKey, error) {
	if !validID(id) {
		return APIKey{}, ErrNotFound.New()
	}
	k, _, err := get[APIKey](ctx, s, tenant, "apikey."+id)
	return k.Public(), err
}

// RevokeAPIKey revokes an API key; it stops working at once.
func (s *Store) RevokeAPIKey(ctx context.Context, tenant, id string) (APIKey, error) {
	if !validID(id) {
		return APIKey{}, ErrNotFound.New()
	}
	now := s.now().UTC()
	k, err := update(ctx, s, tenant, "apikey."+id, func(k *APIKey) {
		if k.RevokedAt == nil {
			k.RevokedAt = &now
		}
	})
	return k.Public(), err
}

// ParseAPIKeyToken splits an API key token into id and secret.
func ParseAPIKeyToken(token string) (id, secret string, ok bool) {
	return ParseToken(apiKeyPrefix, token)
}

// IsAPIKeyToken reports whether a bearer token has the API key form.
func IsAPIKeyToken(token string) bool { return strings.HasPrefix(token, apiKeyPrefix) }

// VerifyAPIKey authenticates an API key token. The tenant of a key whose
// id exists is returned even when the secret is wrong (for the audit log).
func (s *Store) VerifyAPIKey(ctx context.Context, token string) (APIKey, error) {
	id, secret, ok := ParseAPIKeyToken(token)
	if !ok {
		return APIKey{}, ErrInvalid.Wrap(errMalformedToken)
	}
	tenant, k, err := lookup[APIKey](ctx, s, id, "apikey."+id)
	if err != nil {
		return APIKey{}, err
	}
	if !SecretMatches(secretDomain, secret, k.Hash) {
		return APIKey{APIKey: client.APIKey{Tenant: tenant, ID: id}}, ErrInvalid.New()
	}
	now := s.now()
	if !k.Active(now) {
		return APIKey{APIKey: client.APIKey{Tenant: tenant, ID: id}}, ErrInvalid.WithDetail("the key is revoked or expired")
	}
	s.noteUse(tenant, id, now)
	return k.Public(), nil
}

// lookup reads the record key of the credential id from the bucket of the
// tenant the index names for id (returned too). A credential the index or
// the bucket does not hold is ErrInvalid: authentication tells no more.
func lookup[T any](ctx context.Context, s *Store, id, key string) (string, T, error) {
	var v T
	tenant, err := s.tenantOf(ctx, id)
	if err != nil {
		return "", v, err
	}
	v, _, err = get[T](ctx, s, tenant, key)
	if ErrNotFound.Is(err) {
		err = ErrInvalid.New()
	}
	return tenant, v, err
}

func (s *Store) tenantOf(ctx context.Context, id string) (string, error) {
	e, err := s.index.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", ErrInvalid.New()
	}
	if err != nil {
		return "", fmt.Errorf("credential: index: %w", err)
	}
	return string(e.Value()), nil
}

// noteUse records the last use of a key, at most once a minute per key,
// without delaying the request.
func (s *Store) noteUse(tenant, id string, now time.Time) {
	s.mu.Lock()
	last := s.used[id]
	if now.Sub(last) < lastUseWindow {
		s.mu.Unlock()
		return
	}
	s.used[id] = now
	s.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		t := now.UTC()
		_, _ = update(ctx, s, tenant, "apikey."+id, func(k *APIKey) { k.LastUsedAt = &t })
	}()
}

// CreateClient makes an OAuth2 client and returns it with its secret,
// shown once.
func (s *Store) CreateClient(ctx context.Context, tenant, name string, scopes, held []string, createdBy string) (Client, string, error) {
	return s.CreateClientWithin(ctx, tenant, name, scopes, held, 0, time.Time{}, createdBy)
}

// CreateClientWithin is CreateClient for a client that expires after ttl
// (0: never, else 1 minute to 2 years, as an API key) and for a creator
// that itself expires at notAfter (zero: never): the client expires then
// at the latest.
func (s *Store) CreateClientWithin(ctx context.Context, tenant, name string, scopes, held []string, ttl time.Duration, notAfter time.Time, createdBy string) (Client, string, error) {
	n, err := s.mint(name, scopes, held, ttl, notAfter)
	if err != nil {
		return Client{}, "", err
	}
	c := Client{OAuth2Client: client.OAuth2Client{ID: clientPrefix + n.id, Tenant: tenant, Name: name, Scopes: n.scopes, CreatedAt: n.createdAt, CreatedBy: createdBy, ExpiresAt: n.expiresAt}, Hash: n.hash}
	if err := s.put(ctx, tenant, "oauth."+n.id, n.id, c); err != nil {
		return Client{}, "", err
	}
	return c.Public(), secretPrefix + n.secret, nil
}

func clientKey(clientID string) (string, bool) {
	id, ok := strings.CutPrefix(clientID, clientPrefix)
	if !ok || !validID(id) {
		return "", false
	}
	return id, true
}

// Clients lists a tenant's OAuth2 clients (without hashes), oldest first.
func (s *Store) Clients(ctx context.Context, tenant string) ([]Client, error) {
	return list(ctx, s, tenant, "oauth", func(c Client) time.Time { return c.CreatedAt }, Client.Public)
}

// Client returns one OAuth2 client of a tenant (without hash).
func (s *Store) Client(ctx context.Context, tenant, clientID string) (Client, error) {
	id, ok := clientKey(clientID)
	if !ok {
		return Client{}, ErrNotFound.New()
	}
	c, _, err := get[Client](ctx, s, tenant, "oauth."+id)
	return c.Public(), err
}

// RevokeClient revokes an OAuth2 client: it gets no new tokens and its
// issued tokens stop working at once.
func (s *Store) RevokeClient(ctx context.Context, tenant, clientID string) (Client, error) {
	id, ok := clientKey(clientID)
	if !ok {
		return Client{}, ErrNotFound.New()
	}
	now := s.now().UTC()
	c, err := update(ctx, s, tenant, "oauth."+id, func(c *Client) {
		if c.RevokedAt == nil {
			c.RevokedAt = &now
		}
	})
	return c.Public(), err
}

// VerifyClient authenticates a client id and secret (token endpoint).
func (s *Store) VerifyClient(ctx context.Context, clientID, secret string) (Client, error) {
	id, ok := clientKey(clientID)
	if !ok {
		return Client{}, ErrInvalid.New()
	}
	tenant, c, err := lookup[Client](ctx, s, id, "oauth."+id)
	if err != nil {
		return Client{}, err
	}
	raw, ok := strings.CutPrefix(secret, secretPrefix)
	if !ok || !SecretMatches(secretDomain, raw, c.Hash) {
		return Client{OAuth2Client: client.OAuth2Client{ID: c.ID, Tenant: tenant}}, ErrInvalid.New()
	}
	if !c.Active(s.now()) {
		return Client{OAuth2Client: client.OAuth2Client{ID: c.ID, Tenant: tenant}}, ErrInvalid.WithDetail("the client is revoked or expired")
	}
	return c.Public(), nil
}

// ActiveClient reports whether a client still exists and is neither
// revoked nor expired (checked on every use of its tokens).
func (s *Store) ActiveClient(ctx context.Context, tenant, clientID string) (Client, error) {
	c, err := s.Client(ctx, tenant, clientID)
	if err != nil {
		return Client{}, err
	}
	if !c.Active(s.now()) {
		return Client{}, ErrInvalid.WithDetail("the client is revoked or expired")
	}
	return c, nil
}
