package registry

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/kverr"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/credential"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/internal/retry"
)

// Enrollment faults a client can see.
var (
	ErrTokenInvalid        = fault.Define("registry.token_invalid", fault.Unauthenticated, "the enrollment token is not valid (mistyped, cut short, or its gateway was deleted): check it was copied whole, or make a new one with iotransit token create SERIAL (POST /v1/tenants/{tenant}/enrollment-tokens)")
	ErrTokenUsed           = fault.Define("registry.token_used", fault.Unauthenticated, "the enrollment token has been used: each works once; make a new one with iotransit token create SERIAL (POST /v1/tenants/{tenant}/enrollment-tokens)")
	ErrTokenExpired        = fault.Define("registry.token_expired", fault.Unauthenticated, "the enrollment token has expired: make a new one with iotransit token create SERIAL, with a longer --ttl if needed (POST /v1/tenants/{tenant}/enrollment-tokens)")
	ErrTokenRevoked        = fault.Define("registry.token_revoked", fault.Unauthenticated, "the enrollment token was revoked: ask the tenant for a new one, made with iotransit token create SERIAL (POST /v1/tenants/{tenant}/enrollment-tokens)")
	ErrTokenNotFound       = fault.Define("registry.token_not_found", fault.NotFound, "no such enrollment token")
	ErrTokenSerialMismatch = fault.Define("registry.token_serial_mismatch", fault.PermissionDenied, "the enrollment token was issued for another gateway serial")
	ErrTokenTTLInvalid     = fault.Define("registry.token_ttl_invalid", fault.InvalidArgument, "a token lives between 1 minute and 30 days")
	ErrRenewalRateLimited  = fault.Define("registry.renewal_rate_limited", fault.ResourceExhausted, "the gateway renews its certificate too often; try again later")
)

// Renewal rate limit: a gateway that was issued RenewalBurst certificates
// within RenewalWindow is refused renewal until the oldest of them leaves
// the window. RenewalBurst must not exceed keptCertificateRecords, the
// entries a record always keeps, or they could not be counted.
const (
	RenewalBurst  = 10
	RenewalWindow = time.Minute
)

// EnrollmentToken is a one-time secret that lets the gateway with Serial get
// its first certificate. Its hash is stored, never the token. It is bound
// to the gateway registered when it was made: once that gateway is deleted,
// the token does not work for a gateway registered again with the serial.
type EnrollmentToken struct {
	ID        string     `json:"id"`
	Tenant    string     `json:"tenant"`
	Serial    string     `json:"serial"`
	CreatedAt time.Time  `json:"createdAt"`
	CreatedBy string     `json:"createdBy,omitempty"`
	ExpiresAt time.Time  `json:"expiresAt"`
	UsedAt    *time.Time `json:"usedAt,omitempty"`
	// RevokedAt is when the token was revoked (RevokeEnrollmentToken); a
	// revoked token enrolls nothing.
	RevokedAt *time.Time `json:"revokedAt,omitempty"`
	Hash      []byte     `json:"hash,omitempty"`
	// GatewayIncarnation is the Incarnation of the gateway the token was
	// made for. Stored only, like Hash: cleared in what callers are given.
	GatewayIncarnation string `json:"gatewayIncarnation,omitempty"`
}

// boundTo reports whether t was made for g (and not for an earlier gateway
// with its serial).
func (t *EnrollmentToken) boundTo(g *Gateway) bool {
	if t.GatewayIncarnation != "" || g.Incarnation != "" {
		return t.GatewayIncarnation == g.Incarnation
	}
	// Token and gateway both from before incarnations: a gateway registered
	// after the token was made is a later one.
	return !g.CreatedAt.After(t.CreatedAt)
}

// An enrollment token has the form of credential.NewToken, with its own
// prefix and hash domain.
const (
	tokenPrefix     = "iet_"
	tokenHashDomain = "iotransit/enrollment/v1"
)

// The lifetime of an enrollment token: when none is asked, and the longest.
const (
	DefaultTokenTTL = 24 * time.Hour
	MaxTokenTTL     = 30 * 24 * time.Hour
)

func (r *Registry) tokens(ctx context.Context) (jetstream.KeyValue, error) {
	return r.kvs.KV(ctx, names.EnrollmentBucket, 1)
}

// CreateEnrollmentToken makes a one-time token for a registered, active
// gateway. ttl 0 means 24 hours. The token is returned once.
func (r *Registry) CreateEnrollmentToken(ctx context.Context, tenant, serial string, ttl time.Duration, createdBy string) (EnrollmentToken, string, error) {
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	if ttl < time.Minute || ttl > MaxTokenTTL {
		return EnrollmentToken{}, "", ErrTokenTTLInvalid.New()
	}
	if !ValidSerial(serial) {
		return EnrollmentToken{}, "", ErrSerialInvalid.New()
	}
	if _, err := r.entry(tenant); err != nil {
		return EnrollmentToken{}, "", err
	}
	g, ok := r.Gateway(tenant, serial)
	if !ok {
		return EnrollmentToken{}, "", ErrGatewayNotFound.New()
	}
	if g.State != StateActive {
		return EnrollmentToken{}, "", ErrGatewayNotActive.New()
	}
	token, id, secret, err := credential.NewToken(tokenPrefix)
	if err != nil {
		return EnrollmentToken{}, "", fmt.Errorf("registry: %w", err)
	}
	now := r.now().UTC()
	t := EnrollmentToken{ID: id, Tenant: tenant, Serial: serial, CreatedAt: now, CreatedBy: createdBy, ExpiresAt: now.Add(ttl), Hash: credential.HashSecret(tokenHashDomain, secret), GatewayIncarnation: g.Incarnation}
	kv, err := r.tokens(ctx)
	if err != nil {
		return EnrollmentToken{}, "", err
	}
	v, err := json.Marshal(t)
	if err != nil {
		return EnrollmentToken{}, "", err
	}
	if _, err := kv.Create(ctx, id, v); err != nil {
		return EnrollmentToken{}, "", fmt.Errorf("registry: store token: %w", err)
	}
	t.Hash, t.GatewayIncarnation = nil, ""
	return t, token, nil
}

// EnrollmentTokens lists a tenant's tokens (without hashes), newest first.
func (r *Registry) EnrollmentTokens(ctx context.Context, tenant string) ([]EnrollmentToken, error) {
	if _, err := r.entry(tenant); err != nil {
		return nil, err
	}
	kv, err := r.tokens(ctx)
	if err != nil {
		return nil, err
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("registry: list tokens: %w", err)
	}
	out := []EnrollmentToken{}
	for key := range lister.Keys() {
		e, err := kv.Get(ctx, key)
		if err != nil {
			continue // deleted meanwhile
		}
		var t EnrollmentToken
		if json.Unmarshal(e.Value(), &t) == nil && t.Tenant == tenant {
			t.Hash, t.GatewayIncarnation = nil, ""
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b EnrollmentToken) int { return b.CreatedAt.Compare(a.CreatedAt) })
	return out, nil
}

// RevokeEnrollmentToken revokes a tenant's token: from now on it enrolls
// nothing (ErrTokenRevoked). Revoking a revoked token changes nothing;
// a used or expired token can be revoked too. A token of another tenant is
// ErrTokenNotFound, like an unknown one.
func (r *Registry) RevokeEnrollmentToken(ctx context.Context, tenant, id string) (EnrollmentToken, error) {
	if _, err := r.entry(tenant); err != nil {
		return EnrollmentToken{}, err
	}
	if !validTokenID(id) {
		return EnrollmentToken{}, ErrTokenNotFound.New()
	}
	kv, err := r.tokens(ctx)
	if err != nil {
		return EnrollmentToken{}, err
	}
	for attempt := 1; attempt <= updateAttempts; attempt++ {
		if attempt > 1 && !retry.Sleep(ctx, updateBackoff.Delay(attempt-1)) {
			return EnrollmentToken{}, ctx.Err()
		}
		t, rev, err := read[EnrollmentToken](ctx, kv, id, "token")
		if errors.Is(err, jetstream.ErrKeyNotFound) || err == nil && t.Tenant != tenant {
			return EnrollmentToken{}, ErrTokenNotFound.New()
		}
		if err != nil {
			return EnrollmentToken{}, err
		}
		if t.RevokedAt == nil {
			now := r.now().UTC()
			t.RevokedAt = &now
			v, err := json.Marshal(t)
			if err != nil {
				return EnrollmentToken{}, err
			}
			if _, err := kv.Update(ctx, id, v, rev); kverr.Conflict(err) {
				continue // spent or revoked meanwhile: read again
			} else if err != nil {
				return EnrollmentToken{}, fmt.Errorf("registry: revoke token: %w", err)
			}
		}
		t.Hash, t.GatewayIncarnation = nil, ""
		return t, nil
	}
	return EnrollmentToken{}, ErrBusy.New()
}

// validTokenID reports whether id has the form of a token id (16 hex
// digits, credential.NewToken), which is also a valid KV key.
func validTokenID(id string) bool {
	_, err := hex.DecodeString(id)
	return len(id) == 16 && err == nil
}

// Enrollment is the result of a successful enrollment.
type Enrollment struct {
	Tenant      string
	Serial      string
	Certificate Certificate
	// Chain is the PEM of the gateway certificate followed by the tenant CA.
	Chain []byte
}

// Enroll spends a token: the CSR's subject common name must be the token's
// serial, and the token works once. A CSR problem does not spend it. A
// token whose gateway was deleted (even if the serial was registered again
// since) is refused as ErrTokenInvalid, like an unknown token.
//
// ahead, when not nil, is called once the token and the CSR have passed
// every check and before the token is spent, with the tenant and serial
// the token names (the API writes the enrollment ahead to that tenant's
// audit log there); its error refuses the enrollment with nothing spent
// or issued.
func (r *Registry) Enroll(ctx context.Context, token string, csrPEM []byte, validity time.Duration, ahead func(tenant, serial string) error) (Enrollment, error) {
	id, secret, ok := credential.ParseToken(tokenPrefix, token)
	if !ok {
		return Enrollment{}, ErrTokenInvalid.New()
	}
	kv, err := r.tokens(ctx)
	if err != nil {
		return Enrollment{}, err
	}
	t, rev, err := read[EnrollmentToken](ctx, kv, id, "token")
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Enrollment{}, ErrTokenInvalid.New()
	}
	if err != nil {
		return Enrollment{}, err
	}
	if !credential.SecretMatches(tokenHashDomain, secret, t.Hash) {
		return Enrollment{}, ErrTokenInvalid.New()
	}
	if t.RevokedAt != nil {
		return Enrollment{Tenant: t.Tenant, Serial: t.Serial}, ErrTokenRevoked.New()
	}
	if t.UsedAt != nil {
		return Enrollment{Tenant: t.Tenant, Serial: t.Serial}, ErrTokenUsed.New()
	}
	now := r.now().UTC()
	if !now.Before(t.ExpiresAt) {
		return Enrollment{Tenant: t.Tenant, Serial: t.Serial}, ErrTokenExpired.New()
	}
	// The gateway the token was made for must still be registered. Refused
	// as an unknown token: the caller learns nothing of the gateway.
	if g, ok := r.Gateway(t.Tenant, t.Serial); !ok || !t.boundTo(&g) {
		return Enrollment{Tenant: t.Tenant, Serial: t.Serial}, ErrTokenInvalid.New()
	}
	csr, err := pki.ParseCSR(csrPEM)
	if err != nil {
		return Enrollment{Tenant: t.Tenant, Serial: t.Serial}, err
	}
	if cn := csr.Subject.CommonName; cn != t.Serial {
		if ValidSerial(cn) {
			return Enrollment{Tenant: t.Tenant, Serial: t.Serial}, ErrTokenSerialMismatch.New()
		}
		return Enrollment{Tenant: t.Tenant, Serial: t.Serial}, pki.ErrCSRCNMismatch.New()
	}
	if ahead != nil {
		if err := ahead(t.Tenant, t.Serial); err != nil {
			return Enrollment{Tenant: t.Tenant, Serial: t.Serial}, err
		}
	}
	// Spend the token: only one of concurrent requests wins the revision.
	t.UsedAt = &now
	v, err := json.Marshal(t)
	if err != nil {
		return Enrollment{}, err
	}
	if _, err := kv.Update(ctx, id, v, rev); err != nil {
		if kverr.Conflict(err) {
			// Spent or revoked meanwhile: say which.
			if cur, _, rerr := read[EnrollmentToken](ctx, kv, id, "token"); rerr == nil && cur.RevokedAt != nil {
				return Enrollment{Tenant: t.Tenant, Serial: t.Serial}, ErrTokenRevoked.New()
			}
			return Enrollment{Tenant: t.Tenant, Serial: t.Serial}, ErrTokenUsed.New()
		}
		return Enrollment{}, fmt.Errorf("registry: spend token: %w", err)
	}
	// Checked again where the certificate is recorded: the gateway may have
	// been deleted and registered again since the check above.
	certPEM, rec, err := r.issue(ctx, t.Tenant, t.Serial, csrPEM, validity, func(g *Gateway, _ time.Time) error {
		if !t.boundTo(g) {
			return ErrTokenInvalid.New()
		}
		return nil
	})
	if ErrGatewayNotFound.Is(err) {
		err = ErrTokenInvalid.New()
	}
	if err != nil {
		return Enrollment{Tenant: t.Tenant, Serial: t.Serial}, err
	}
	return r.enrollment(t.Tenant, t.Serial, certPEM, rec), nil
}

// Reenroll issues a new certificate to an authenticated gateway from a CSR
// with its serial. The current certificate stays valid until it expires or
// is superseded: only the newest MaxValidCertificates certificates of a
// gateway stay valid. A gateway issued RenewalBurst certificates within
// RenewalWindow is refused with ErrRenewalRateLimited.
func (r *Registry) Reenroll(ctx context.Context, id Identity, csrPEM []byte, validity time.Duration) (Enrollment, error) {
	certPEM, rec, err := r.issue(ctx, id.Tenant, id.Serial, csrPEM, validity, func(g *Gateway, now time.Time) error {
		recent := 0
		for _, c := range g.Certificates {
			if now.Sub(c.IssuedAt) < RenewalWindow {
				recent++
			}
		}
		if recent >= RenewalBurst {
			return ErrRenewalRateLimited.New()
		}
		return nil
	})
	if err != nil {
		return Enrollment{Tenant: id.Tenant, Serial: id.Serial}, err
	}
	return r.enrollment(id.Tenant, id.Serial, certPEM, rec), nil
}

// enrollment is the result of issuing the certificate rec (PEM certPEM) to
// a gateway: its chain ends with the tenant CA version that issued it.
func (r *Registry) enrollment(tenant, serial string, certPEM []byte, rec Certificate) Enrollment {
	return Enrollment{Tenant: tenant, Serial: serial, Certificate: rec, Chain: append(certPEM, r.issuerPEM(tenant, certPEM)...)}
}
