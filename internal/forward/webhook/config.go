// Package webhook is the webhook target of forwarding: it POSTs each batch
// as a JSON array (or HPKE-sealed) to a customer's HTTPS endpoint with
// Standard Webhooks signing (webhook-id, webhook-timestamp,
// webhook-signature, whsec_ secrets, two signatures while a secret is
// rotated out), outbound auth (API key header, OAuth2 client credentials,
// mTLS), and SSRF-safe dialling: every connection, the OAuth2 token
// request's included, goes through the egress policy's dialer, and
// redirects are never followed.
package webhook

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/forward/egress"
)

// Faults a client can see when an integration's webhook settings are saved.
// URL problems use egress's forward.target_invalid and
// forward.target_private, TLS material egress's forward.tls_invalid.
var (
	ErrSecretInvalid  = fault.Define("webhook.secret_invalid", fault.InvalidArgument, "the signing secret is not valid: it must be whsec_ followed by the base64 of 24 to 64 random bytes")
	ErrSecretMissing  = fault.Define("webhook.secret_missing", fault.InvalidArgument, "the webhook needs at least one signing secret that has not expired")
	ErrAuthInvalid    = fault.Define("webhook.auth_invalid", fault.InvalidArgument, "the outbound authentication settings are incomplete or not valid")
	ErrTimeoutInvalid = fault.Define("webhook.timeout_invalid", fault.InvalidArgument, "the request timeout must be between 0 (the default, 10s) and 2 minutes")
)

const (
	// DefaultTimeout bounds one request (and the token request before it).
	DefaultTimeout = 10 * time.Second
	maxTimeout     = 2 * time.Minute
	// DefaultAPIKeyHeader is the header an API key goes in when
	// Auth.HeaderName is empty.
	DefaultAPIKeyHeader = "X-API-Key"

	secretPrefix = "whsec_"
	// The Standard Webhooks specification asks for secrets of 24 to 64 bytes.
	minSecretLen = 24
	maxSecretLen = 64
	maxURLLen    = 2048
)

// Secret is one signing secret of an integration.
type Secret struct {
	// Value is the secret in Standard Webhooks form, whsec_<base64>.
	Value string
	// NotAfter is zero for the current secret (no expiry). A secret that
	// has been rotated out carries the time until which requests are still
	// signed with it, so receivers can switch over without a gap.
	NotAfter time.Time
}

// AuthKind selects how requests authenticate to the endpoint.
type AuthKind string

// Auth kinds.
const (
	AuthNone   AuthKind = "none"
	AuthAPIKey AuthKind = "apikey"
	AuthOAuth2 AuthKind = "oauth2"
	AuthMTLS   AuthKind = "mtls"
)

// Auth is the outbound authentication of a webhook, besides the signature.
type Auth struct {
	// Kind is one of the Auth kinds; empty means AuthNone.
	Kind AuthKind
	// HeaderName and HeaderValue are the API key header (apikey), e.g.
	// "X-API-Key" and the key, or "Authorization" and "Bearer <token>".
	// HeaderName defaults to X-API-Key.
	HeaderName, HeaderValue string
	// TokenURL, ClientID, ClientSecret and Scopes configure the OAuth2
	// client credentials grant (RFC 6749 §4.4), oauth2. The client
	// authenticates with HTTP Basic (RFC 6749 §2.3.1).
	TokenURL, ClientID, ClientSecret string
	Scopes                           []string
	// TokenCAPEM pins the CAs that verify the token endpoint. Empty: the
	// system roots plus Config.TLS.CAPEM, so a public identity provider
	// works next to a receiver with a private CA.
	TokenCAPEM string
	// mtls authenticates with Config.TLS.CertPEM and KeyPEM, which are then
	// required. A client certificate configured with another kind is
	// presented too (e.g. mTLS plus an API key).
}

// Config is one webhook integration's target.
type Config struct {
	// URL is the endpoint, https only.
	URL string
	// Secrets are the signing secrets: at least one. Every secret whose
	// NotAfter is zero or in the future signs each request.
	Secrets []Secret
	// TLS pins the CA that verifies the endpoint and holds the client
	// certificate. It applies to the OAuth2 token request as well, except
	// ServerName.
	TLS  egress.TLSOptions
	Auth Auth
	// Timeout bounds each request, default 10s, at most 2 minutes.
	Timeout time.Duration
	// Sealer, when set, encrypts the batch JSON; the body is then its
	// output, Content-Type application/octet-stream, with the header
	// iotransit-encryption: hpke.
	Sealer forward.Sealer
	// Policy guards every connection against internal addresses.
	Policy egress.Policy
	// Now is the clock of signatures, secret expiry and Retry-After dates
	// (nil: time.Now).
	Now func() time.Time
}

func (c Config) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Validate checks the configuration as an integration is saved and returns
// every problem at once (errors.Join of faults): the URL is https with a
// host and no user info, and its host resolves to addresses the policy
// allows; the secrets parse and one of them is current; the TLS material
// loads; the fields of the auth kind are present; an OAuth2 token URL
// passes the same checks as the URL.
func (c Config) Validate(ctx context.Context) error {
	return c.check(ctx, true)
}

// check validates c; resolve adds the policy's host checks, which need DNS
// (New leaves them to the dialer, which checks every connection anyway).
func (c Config) check(ctx context.Context, resolve bool) error {
	var errs []error
	if host, err := checkURL(c.URL, "url"); err != nil {
		errs = append(errs, err)
	} else if resolve {
		if err := c.Policy.CheckHost(ctx, host); err != nil {
			errs = append(errs, withField(err, "url"))
		}
	}
	errs = append(errs, c.checkSecrets()...)
	if _, err := egress.TLSConfig(c.TLS); err != nil {
		errs = append(errs, err)
	}
	if c.Timeout < 0 || c.Timeout > maxTimeout {
		errs = append(errs, ErrTimeoutInvalid.WithDetail("timeout %s", c.Timeout))
	}
	errs = append(errs, c.checkAuth(ctx, resolve)...)
	return errors.Join(errs...)
}

func (c Config) checkSecrets() []error {
	if len(c.Secrets) == 0 {
		return []error{ErrSecretMissing.New()}
	}
	var errs []error
	now, current := c.now(), false
	for i, s := range c.Secrets {
		if _, err := ParseSecret(s.Value); err != nil {
			errs = append(errs, withField(err, fmt.Sprintf("secrets[%d]", i)))
			continue
		}
		if s.NotAfter.IsZero() || now.Before(s.NotAfter) {
			current = true
		}
	}
	if len(errs) == 0 && !current {
		errs = append(errs, ErrSecretMissing.WithDetail("every secret is past its notAfter"))
	}
	return errs
}

// reservedHeaders are the headers an API key may not replace.
var reservedHeaders = map[string]bool{
	"Webhook-Id": true, "Webhook-Timestamp": true, "Webhook-Signature": true,
	"Content-Type": true, "Content-Length": true, "Content-Encoding": true, "Transfer-Encoding": true,
	"Host": true, "Connection": true, "User-Agent": true, "Iotransit-Encryption": true,
}

func (c Config) checkAuth(ctx context.Context, resolve bool) []error {
	a := c.Auth
	var errs []error
	switch a.Kind {
	case "", AuthNone:
	case AuthAPIKey:
		name := a.apiKeyHeader()
		switch {
		case !validHeaderName(name):
			errs = append(errs, ErrAuthInvalid.WithDetail("auth.headerName is not a valid HTTP header name"))
		case reservedHeaders[http.CanonicalHeaderKey(name)]:
			errs = append(errs, ErrAuthInvalid.WithDetail("auth.headerName %s is set by the webhook itself", http.CanonicalHeaderKey(name)))
		}
		switch {
		case a.HeaderValue == "":
			errs = append(errs, ErrAuthInvalid.WithDetail("apikey needs auth.headerValue"))
		case !validHeaderValue(a.HeaderValue):
			// Never echo the value: it is the key.
			errs = append(errs, ErrAuthInvalid.WithDetail("auth.headerValue holds characters a header cannot carry"))
		}
	case AuthOAuth2:
		if a.ClientID == "" {
			errs = append(errs, ErrAuthInvalid.WithDetail("oauth2 needs auth.clientId"))
		}
		if a.ClientSecret == "" {
			errs = append(errs, ErrAuthInvalid.WithDetail("oauth2 needs auth.clientSecret"))
		}
		if a.TokenURL == "" {
			errs = append(errs, ErrAuthInvalid.WithDetail("oauth2 needs auth.tokenUrl"))
		} else if host, err := checkURL(a.TokenURL, "auth.tokenUrl"); err != nil {
			errs = append(errs, err)
		} else if resolve {
			if err := c.Policy.CheckHost(ctx, host); err != nil {
				errs = append(errs, withField(err, "auth.tokenUrl"))
			}
		}
		if a.TokenCAPEM != "" && !x509.NewCertPool().AppendCertsFromPEM([]byte(a.TokenCAPEM)) {
			errs = append(errs, ErrAuthInvalid.WithDetail("auth.tokenCaPem holds no certificate"))
		}
	case AuthMTLS:
		if c.TLS.CertPEM == "" || c.TLS.KeyPEM == "" {
			errs = append(errs, ErrAuthInvalid.WithDetail("mtls needs a client certificate and key (clientCertPem, clientKeyPem)"))
		}
	default:
		errs = append(errs, ErrAuthInvalid.WithDetail("auth.kind %q is not one of none, apikey, oauth2, mtls", truncate(string(a.Kind), 32)))
	}
	return errs
}

// validHeaderName reports whether s is a field name (RFC 9110 §5.1: a token).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// validHeaderValue reports whether s can be a field value (RFC 9110 §5.5):
// no control characters but tab, and no surrounding whitespace.
func validHeaderValue(s string) bool {
	if strings.TrimSpace(s) != s {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

func (a Auth) apiKeyHeader() string {
	if a.HeaderName == "" {
		return DefaultAPIKeyHeader
	}
	return a.HeaderName
}

// checkURL checks that raw is an absolute https URL with a host and no user
// info, and returns the host name (without port or brackets).
func checkURL(raw, field string) (string, error) {
	if len(raw) > maxURLLen {
		return "", egress.ErrTargetInvalid.WithDetail("%s is longer than %d characters", field, maxURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil {
		// The parse error quotes the URL, which may hold a key: not shown.
		return "", egress.ErrTargetInvalid.WithDetail("%s is not a valid URL", field)
	}
	if u.Scheme != "https" {
		return "", egress.ErrTargetInvalid.WithDetail("%s must use https", field)
	}
	if u.Opaque != "" || u.Hostname() == "" {
		return "", egress.ErrTargetInvalid.WithDetail("%s has no host", field)
	}
	if u.User != nil {
		return "", egress.ErrTargetInvalid.WithDetail("%s must not hold a user name or password", field)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", egress.ErrTargetInvalid.WithDetail("%s has an invalid port", field)
		}
	}
	return u.Hostname(), nil
}

// withField prefixes a fault's public detail with the field it is about.
func withField(err error, field string) error {
	fe, ok := fault.As(err)
	if !ok {
		return err
	}
	if d := fe.Detail(); d != "" {
		return fe.WithDetail("%s: %s", field, d)
	}
	return fe.WithDetail("%s", field)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// GenerateSecret returns a new signing secret: whsec_ and the base64 of 32
// random bytes.
func GenerateSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("webhook: generate secret: %w", err)
	}
	return secretPrefix + base64.StdEncoding.EncodeToString(b), nil
}

// ParseSecret returns the key bytes of a Standard Webhooks secret,
// whsec_<base64 of 24 to 64 bytes>, and refuses anything else with
// ErrSecretInvalid (whose text never holds the secret).
func ParseSecret(s string) ([]byte, error) {
	rest, ok := strings.CutPrefix(s, secretPrefix)
	if !ok {
		return nil, ErrSecretInvalid.WithDetail("it does not start with %s", secretPrefix)
	}
	key, err := base64.StdEncoding.Strict().DecodeString(rest)
	if err != nil {
		return nil, ErrSecretInvalid.WithDetail("the part after %s is not standard base64", secretPrefix)
	}
	if len(key) < minSecretLen || len(key) > maxSecretLen {
		return nil, ErrSecretInvalid.WithDetail("the key is %d bytes", len(key))
	}
	return key, nil
}
