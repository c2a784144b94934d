package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/oauth2"

	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/forward/egress"
)

const (
	userAgent = "iotransit/1"
	// maxResponse is how much of a response is read (and discarded) so the
	// connection can be reused.
	maxResponse   = 64 << 10
	maxRetryAfter = time.Hour
)

var (
	errClosed   = errors.New("webhook: target closed")
	errNoID     = errors.New("webhook: the batch has no id")
	errNoKey    = errors.New("webhook: every signing secret is past its notAfter")
	errRedirect = errors.New("webhook: redirects are not followed")
)

var _ forward.Target = (*Target)(nil)

// Target delivers batches to one webhook endpoint. It is safe for
// concurrent use and keeps connections alive between deliveries.
type Target struct {
	url     string
	host    string // the only part of the URL errors show (a query may hold a key)
	secrets []key
	auth    Auth
	sealer  forward.Sealer
	timeout time.Duration
	now     func() time.Time

	transport *http.Transport
	client    *http.Client
	tokens    *tokenCache // oauth2 only
	tokenTr   *http.Transport

	// askedForCert records that the endpoint requested a client
	// certificate: with TLS 1.3 a refused (or missing) one is only reported
	// after the handshake, and HTTP/2 loses that alert.
	askedForCert atomic.Bool
	closed       atomic.Bool
}

type key struct {
	bytes    []byte
	notAfter time.Time
}

// New builds the target of c. It checks c as Validate does except for the
// DNS-based host checks: the dialer refuses internal addresses on every
// connection, so an endpoint whose name does not resolve right now fails
// its deliveries (and is retried) rather than the construction.
func New(ctx context.Context, c Config) (*Target, error) {
	if err := c.check(ctx, false); err != nil {
		return nil, err
	}
	u, _ := url.Parse(c.URL) // checked
	t := &Target{
		url:     c.URL,
		host:    u.Host,
		auth:    c.Auth,
		sealer:  c.Sealer,
		timeout: c.Timeout,
		now:     c.Now,
	}
	if t.timeout == 0 {
		t.timeout = DefaultTimeout
	}
	if t.now == nil {
		t.now = time.Now
	}
	for _, s := range c.Secrets {
		k, _ := ParseSecret(s.Value) // checked
		t.secrets = append(t.secrets, key{bytes: k, notAfter: s.NotAfter})
	}
	tlsConf, err := egress.TLSConfig(c.TLS)
	if err != nil {
		return nil, err
	}
	certs := tlsConf.Certificates
	tlsConf.Certificates = nil
	tlsConf.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		t.askedForCert.Store(true)
		for i := range certs {
			if cri.SupportsCertificate(&certs[i]) == nil {
				return &certs[i], nil
			}
		}
		if len(certs) > 0 {
			return &certs[0], nil
		}
		return &tls.Certificate{}, nil // none: the server decides
	}
	t.transport = newTransport(c.Policy, t.timeout, tlsConf)
	t.client = &http.Client{Transport: t.transport, CheckRedirect: noRedirect}
	if c.Auth.Kind == AuthOAuth2 {
		// The token request goes through the same egress guard and TLS
		// settings, but for the roots that verify the token server; the
		// ServerName override is the endpoint's, not the token server's.
		tokTLS := tlsConf.Clone()
		tokTLS.ServerName = ""
		tokTLS.RootCAs = tokenRoots(c.Auth.TokenCAPEM, c.TLS.CAPEM)
		tokTLS.GetClientCertificate, tokTLS.Certificates = nil, certs
		t.tokenTr = newTransport(c.Policy, t.timeout, tokTLS)
		t.tokenTr.MaxIdleConnsPerHost = 1
		t.tokens = newTokenCache(c.Auth, &http.Client{Transport: t.tokenTr, CheckRedirect: noRedirect})
	}
	return t, nil
}

// tokenRoots are the CAs that verify the OAuth2 token endpoint: the pinned
// token CA, or else the system roots plus the endpoint's pinned CA (nil:
// the system roots alone).
func tokenRoots(tokenCA, endpointCA string) *x509.CertPool {
	if tokenCA != "" {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM([]byte(tokenCA)) // checked
		return pool
	}
	if endpointCA == "" {
		return nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	pool.AppendCertsFromPEM([]byte(endpointCA)) // checked
	return pool
}

func newTransport(p egress.Policy, timeout time.Duration, tlsConf *tls.Config) *http.Transport {
	return &http.Transport{
		Proxy:                  nil, // never the environment's proxy: it would bypass the egress guard
		DialContext:            p.Dialer(timeout).DialContext,
		TLSClientConfig:        tlsConf,
		TLSHandshakeTimeout:    timeout,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           16,
		MaxIdleConnsPerHost:    4,
		IdleConnTimeout:        90 * time.Second,
		ResponseHeaderTimeout:  timeout,
		MaxResponseHeaderBytes: maxResponse,
	}
}

// noRedirect hands a 3xx back as the response: following it could lead the
// request (and its credentials) to an internal address or another host.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Close releases the idle connections. Deliveries after Close fail.
func (t *Target) Close() error {
	t.closed.Store(true)
	t.transport.CloseIdleConnections()
	if t.tokenTr != nil {
		t.tokenTr.CloseIdleConnections()
	}
	return nil
}

// Deliver POSTs the batch, signed, and returns nil when the endpoint
// answered 2xx. Every attempt of a batch carries the same webhook-id (the
// batch ID) and is signed anew with the time of the attempt. Failures are
// *forward.DeliveryError, wrapped in *forward.RetryAfterError when the
// endpoint answered 429 or 503 with a Retry-After.
func (t *Target) Deliver(ctx context.Context, b *forward.Batch) error {
	if t.closed.Load() {
		return &forward.DeliveryError{Summary: "target closed", Err: errClosed}
	}
	if b == nil || b.ID == "" {
		return &forward.DeliveryError{Summary: "invalid batch", Err: errNoID}
	}
	body, contentType := b.JSON(), "application/json"
	if t.sealer != nil {
		sealed, err := t.sealer.Seal(body)
		if err != nil {
			return &forward.DeliveryError{Summary: "encryption failed", Err: err}
		}
		body, contentType = sealed, "application/octet-stream"
	}

	var tok *oauth2.Token
	if t.tokens != nil {
		var err error
		if tok, err = t.token(ctx, nil); err != nil {
			return err
		}
	}
	resp, err := t.post(ctx, b.ID, body, contentType, tok)
	if err == nil && resp.status == http.StatusUnauthorized && tok != nil {
		// The endpoint no longer takes the token (revoked, or its clock
		// disagrees): fetch another and try once more, now.
		if tok, err = t.token(ctx, tok); err != nil {
			return err
		}
		resp, err = t.post(ctx, b.ID, body, contentType, tok)
	}
	if err != nil {
		return err
	}
	return t.outcome(resp)
}

// token returns the OAuth2 token to send, fetching one (within the
// request timeout) when needed.
func (t *Target) token(ctx context.Context, refused *oauth2.Token) (*oauth2.Token, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	tok, err := t.tokens.token(ctx, refused)
	if err != nil {
		return nil, &forward.DeliveryError{Summary: "OAuth2 token request failed", Err: err}
	}
	return tok, nil
}

type response struct {
	status     int
	retryAfter string
}

// post makes one request and reads at most maxResponse bytes of the
// answer, which it discards.
func (t *Target) post(ctx context.Context, id string, body []byte, contentType string, tok *oauth2.Token) (response, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return response{}, &forward.DeliveryError{Summary: "invalid request", Err: fmt.Errorf("webhook %s: build request: %w", t.host, unwrapURL(err))}
	}
	now := t.now()
	keys := make([][]byte, 0, len(t.secrets))
	for _, k := range t.secrets {
		if k.notAfter.IsZero() || now.Before(k.notAfter) {
			keys = append(keys, k.bytes)
		}
	}
	if len(keys) == 0 {
		// Never send an unsigned request.
		return response{}, &forward.DeliveryError{Summary: "no valid signing secret", Err: errNoKey}
	}
	h := req.Header
	h[http.CanonicalHeaderKey(HeaderID)] = []string{id}
	h[http.CanonicalHeaderKey(HeaderTimestamp)] = []string{strconv.FormatInt(now.Unix(), 10)}
	h[http.CanonicalHeaderKey(HeaderSignature)] = []string{Sign(keys, id, now, body)}
	h["Content-Type"] = []string{contentType}
	h["User-Agent"] = []string{userAgent}
	if t.sealer != nil {
		h[http.CanonicalHeaderKey(HeaderEncryption)] = []string{"hpke"}
	}
	switch {
	case t.auth.Kind == AuthAPIKey:
		h.Set(t.auth.apiKeyHeader(), t.auth.HeaderValue)
	case tok != nil:
		tok.SetAuthHeader(req)
	}

	res, err := t.client.Do(req)
	if err != nil {
		cause := unwrapURL(err)
		summary := networkSummary(cause)
		if t.askedForCert.Load() && closedEarly(summary) {
			summary = "TLS: handshake failed"
		}
		return response{}, &forward.DeliveryError{Summary: summary, Err: fmt.Errorf("webhook %s: %w", t.host, cause)}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, maxResponse))
	_ = res.Body.Close()
	return response{status: res.StatusCode, retryAfter: res.Header.Get("Retry-After")}, nil
}

// outcome turns a response into the delivery's result.
func (t *Target) outcome(r response) error {
	switch {
	case r.status >= 200 && r.status < 300:
		return nil
	case r.status >= 300 && r.status < 400:
		s := fmt.Sprintf("HTTP %d redirect not followed", r.status)
		return &forward.DeliveryError{Summary: s, Err: fmt.Errorf("webhook %s: %w", t.host, errRedirect)}
	}
	s := fmt.Sprintf("HTTP %d", r.status)
	err := &forward.DeliveryError{Summary: s, Err: fmt.Errorf("webhook %s answered %s", t.host, s)}
	if r.status == http.StatusTooManyRequests || r.status == http.StatusServiceUnavailable {
		if d, ok := parseRetryAfter(r.retryAfter, t.now()); ok {
			return &forward.RetryAfterError{After: d, Err: err}
		}
	}
	return err
}

// parseRetryAfter reads a Retry-After value, delta-seconds or an HTTP-date
// (RFC 9110 §10.2.3), capped at an hour. A wait of zero or less is none.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	var d time.Duration
	if strings.Trim(v, "0123456789") == "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter, true // only digits: out of range means huge
		}
		d = time.Duration(n) * time.Second
	} else {
		at, err := http.ParseTime(v)
		if err != nil {
			return 0, false
		}
		d = at.Sub(now)
	}
	if d <= 0 {
		return 0, false
	}
	return min(d, maxRetryAfter), true
}

// unwrapURL drops the *url.Error around a client error: its text holds the
// whole URL, whose query may carry a key.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// networkSummary names a failure to connect or exchange in a few public
// words.
func networkSummary(err error) string {
	var (
		dnsErr  *net.DNSError
		verErr  *tls.CertificateVerificationError
		unkErr  x509.UnknownAuthorityError
		hostErr x509.HostnameError
		invErr  x509.CertificateInvalidError
		recErr  tls.RecordHeaderError
		alert   tls.AlertError
		opErr   *net.OpError
	)
	switch {
	case egress.IsRefused(err):
		return "target address refused"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT), isTimeout(err):
		return "timeout"
	case errors.As(err, &dnsErr):
		if dnsErr.IsNotFound {
			return "DNS: host not found"
		}
		return "DNS: lookup failed"
	case errors.As(err, &verErr), errors.As(err, &unkErr), errors.As(err, &hostErr), errors.As(err, &invErr):
		return "TLS: certificate not trusted"
	case errors.As(err, &recErr), errors.As(err, &alert):
		return "TLS: handshake failed"
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		// A TLS alert from the peer (its type is not exported), e.g. a
		// missing or refused client certificate.
		return "TLS: handshake failed"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "host unreachable"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	}
	switch msg := err.Error(); {
	case strings.Contains(msg, "server gave HTTP response to HTTPS client"), strings.Contains(msg, "tls: "):
		return "TLS: handshake failed"
	case strings.Contains(msg, "http2: client conn could not be established"):
		// The connection closed before the first HTTP/2 request (the
		// cause is not kept by net/http).
		return "connection closed"
	}
	return "connection failed"
}

// closedEarly reports whether a summary is of a connection the peer closed
// without an answer, which right after a client certificate request means
// the certificate (or its absence) was refused.
func closedEarly(summary string) bool {
	return summary == "connection closed" || summary == "connection reset"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
