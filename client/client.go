package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// MaxAnswer is the largest answer the client reads, in bytes; a larger one
// is refused with an error that Is ErrAnswerTooLarge.
const MaxAnswer = 32 << 20

// DefaultTimeout bounds each request when Config.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// DefaultUserAgent is sent when Config.UserAgent is empty.
const DefaultUserAgent = "iotransit-client/1"

// ErrAnswerTooLarge is the error (errors.Is) of an answer larger than
// MaxAnswer.
var ErrAnswerTooLarge = errors.New("client: the answer is too large")

// Config configures a Client.
type Config struct {
	// Server is the API's address: https://host[:port][/path prefix], or
	// host[:port] (https is then assumed). Plain http is refused.
	Server string
	// CAPEM is the PEM of the CA certificates that verify the server. With
	// neither CAPEM nor RootCAs, the system roots do.
	CAPEM []byte
	// RootCAs verifies the server, added to by CAPEM.
	RootCAs *x509.CertPool
	// Credential is the bearer credential sent to routes that need one:
	// the operator key, an API key (itk_…) or an OAuth2 access token. It
	// is never sent to public routes (enrollment, the token endpoint,
	// health) nor to Reenroll.
	Credential string
	// Timeout bounds each request, from connecting to reading the whole
	// answer (default DefaultTimeout); for OpenStream it bounds the
	// handshake.
	Timeout time.Duration
	// Certificate is the client certificate presented over mutual TLS, for
	// Reenroll: a gateway's current certificate and key.
	Certificate *tls.Certificate
	// UserAgent is the User-Agent header (default DefaultUserAgent).
	UserAgent string
	// HTTPClient, when set, carries the requests instead of one the client
	// makes (CAPEM, RootCAs and Certificate are then ignored: its transport
	// decides TLS). Redirects are still never followed.
	HTTPClient *http.Client
}

// Client calls one server's API. It is safe for concurrent use.
type Client struct {
	base    *url.URL
	cred    string
	timeout time.Duration
	agent   string
	hc      *http.Client
}

// New checks cfg and returns a client. No request is made.
func New(cfg Config) (*Client, error) {
	base, err := ParseServerURL(cfg.Server)
	if err != nil {
		return nil, err
	}
	if cfg.Timeout < 0 {
		return nil, errors.New("client: the timeout must not be negative")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = DefaultUserAgent
	}
	var hc http.Client
	if cfg.HTTPClient != nil {
		hc = *cfg.HTTPClient
	} else {
		tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cfg.RootCAs}
		if len(cfg.CAPEM) > 0 {
			if tlsCfg.RootCAs == nil {
				tlsCfg.RootCAs = x509.NewCertPool()
			} else {
				tlsCfg.RootCAs = tlsCfg.RootCAs.Clone()
			}
			if !tlsCfg.RootCAs.AppendCertsFromPEM(cfg.CAPEM) {
				return nil, errors.New("client: no PEM certificate in the CA")
			}
		}
		if cfg.Certificate != nil {
			tlsCfg.Certificates = []tls.Certificate{*cfg.Certificate}
		}
		hc.Transport = &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			TLSClientConfig:     tlsCfg,
			TLSHandshakeTimeout: cfg.Timeout,
			ForceAttemptHTTP2:   true,
		}
	}
	// A redirect would be a misconfiguration; never follow one with the
	// credential.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Client{base: base, cred: cfg.Credential, timeout: cfg.Timeout, agent: cfg.UserAgent, hc: &hc}, nil
}

// WithCredential returns a client of the same server, sharing its
// connections, that sends credential instead (an access token from Token,
// say).
func (c *Client) WithCredential(credential string) *Client {
	d := *c
	d.cred = credential
	return &d
}

// Server returns the server's base URL.
func (c *Client) Server() string { return c.base.String() }

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// ParseServerURL checks a server address: https://host[:port] with an
// optional path prefix, or host[:port] (https is then assumed). Plain http
// is refused, since the credential would cross the network in the clear;
// user info, a query and a fragment are refused too. Its errors start with
// "server", so a command can name its flag ("--" + err.Error()).
func ParseServerURL(s string) (*url.URL, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("server is required, e.g. https://localhost:8443")
	}
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("server %q is not a URL such as https://localhost:8443", s)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("server %q: only https is supported", u.Redacted())
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("server %q: give only scheme, host, port and an optional path prefix", u.Redacted())
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// Answer is a successful (2xx) answer, as received.
type Answer struct {
	// Status is the HTTP status.
	Status int
	// Header holds the answer's headers.
	Header http.Header
	// Body is the answer's body, at most MaxAnswer bytes.
	Body []byte
	// RequestID is the X-Request-Id the server gave the request.
	RequestID string
}

// Decode decodes the answer's JSON into v.
func (a *Answer) Decode(v any) error {
	if err := json.Unmarshal(a.Body, v); err != nil {
		return fmt.Errorf("the server's answer is not the expected JSON (request %s): %v", a.RequestID, err)
	}
	return nil
}

// Do sends method to path (the API path with escaped segments, such as
// "/v1/tenants/acme/gateways") with query, and body JSON-encoded when it is
// not nil (a json.RawMessage goes as it is), with the credential. It returns a 2xx answer, a *Problem, or
// another error (a *TransportError for a network or TLS failure).
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, body any) (*Answer, error) {
	return c.send(ctx, request{method: method, path: path, query: query, body: body, auth: true})
}

// request is one call of the API.
type request struct {
	method string
	path   string // escaped segments
	query  url.Values
	body   any // JSON-encoded when not nil
	// form is sent as application/x-www-form-urlencoded instead of body.
	form url.Values
	// octets is sent as application/octet-stream instead of body.
	octets []byte
	// limit, when positive and below MaxAnswer, bounds the answer instead.
	limit int64
	// auth sends the bearer credential; basic sends HTTP Basic instead.
	auth  bool
	basic *[2]string
}

// path joins escaped segments under /v1.
func path(segs ...string) string {
	var b strings.Builder
	b.WriteString("/v1")
	for _, s := range segs {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

// url returns the URL of an escaped path and a query.
func (c *Client) url(p string, query url.Values) (*url.URL, error) {
	// An id that is empty, "." or ".." would name another resource once a
	// server or a proxy on the way cleans the path.
	for seg := range strings.SplitSeq(strings.TrimPrefix(p, "/"), "/") {
		if seg == "" || seg == "." || seg == ".." {
			return nil, fmt.Errorf("client: request path %q has an empty, . or .. segment (an id must not be one)", p)
		}
	}
	u := *c.base
	u.RawPath = c.base.EscapedPath() + p
	unescaped, err := url.PathUnescape(u.RawPath)
	if err != nil {
		return nil, fmt.Errorf("client: bad request path %q", p)
	}
	u.Path = unescaped
	if len(query) > 0 {
		u.RawQuery = query.Encode()
	}
	return &u, nil
}

// send makes one request within the client's timeout and returns its 2xx
// answer, or a *Problem, or an explained transport error.
func (c *Client) send(ctx context.Context, r request) (*Answer, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	u, err := c.url(r.path, r.query)
	if err != nil {
		return nil, err
	}
	var rd io.Reader
	var ct string
	switch {
	case r.form != nil:
		rd, ct = strings.NewReader(r.form.Encode()), "application/x-www-form-urlencoded"
	case r.octets != nil:
		rd, ct = bytes.NewReader(r.octets), "application/octet-stream"
	case r.body != nil:
		b, err := json.Marshal(r.body)
		if err != nil {
			return nil, err
		}
		rd, ct = bytes.NewReader(b), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json, application/problem+json")
	req.Header.Set("User-Agent", c.agent)
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	switch {
	case r.basic != nil:
		req.SetBasicAuth(url.QueryEscape(r.basic[0]), url.QueryEscape(r.basic[1]))
	case r.auth && c.cred != "":
		req.Header.Set("Authorization", "Bearer "+c.cred)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.explain(ctx, err)
	}
	defer resp.Body.Close()
	limit := int64(MaxAnswer)
	if r.limit > 0 && r.limit < limit {
		limit = r.limit
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading the answer of %s: %w", c.base.Host, c.explain(ctx, err))
	}
	if int64(len(b)) > limit {
		return nil, &tooLargeError{host: c.base.Host}
	}
	a := &Answer{Status: resp.StatusCode, Header: resp.Header, Body: b, RequestID: resp.Header.Get("X-Request-Id")}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return a, nil
	}
	return nil, refusal(resp, a)
}

// refusal turns a non-2xx answer into its error: a *Problem, or an
// *OAuthError from the token endpoint.
func refusal(resp *http.Response, a *Answer) error {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	isJSON := mt == "application/problem+json" || mt == "application/json"
	if isJSON && mt == "application/json" {
		var oe OAuthError
		if json.Unmarshal(a.Body, &oe) == nil && oe.Code != "" {
			oe.Status = resp.StatusCode
			if oe.RequestID == "" {
				oe.RequestID = a.RequestID
			}
			return &oe
		}
	}
	var p Problem
	if isJSON {
		_ = json.Unmarshal(a.Body, &p)
	}
	if p.Status == 0 {
		p.Status = resp.StatusCode
	}
	if p.RequestID == "" {
		p.RequestID = a.RequestID
	}
	if p.Code == "" && p.Title == "" {
		p.Title = "the server answered " + resp.Status
	}
	return &p
}

// call sends r and decodes the answer into a T.
func call[T any](ctx context.Context, c *Client, r request) (*T, error) {
	a, err := c.send(ctx, r)
	if err != nil {
		return nil, err
	}
	var v T
	if err := a.Decode(&v); err != nil {
		return nil, err
	}
	return &v, nil
}

// get is call for a GET with the credential.
func get[T any](ctx context.Context, c *Client, p string, query url.Values) (*T, error) {
	return call[T](ctx, c, request{method: http.MethodGet, path: p, query: query, auth: true})
}

// post is call for a POST with the credential; body nil sends none.
func post[T any](ctx context.Context, c *Client, p string, body any) (*T, error) {
	return call[T](ctx, c, request{method: http.MethodPost, path: p, body: body, auth: true})
}

// items returns a list's items.
func items[T any](l *List[T], err error) ([]T, error) {
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

// noContent sends r, whose answer has no body (204).
func (c *Client) noContent(ctx context.Context, r request) error {
	_, err := c.send(ctx, r)
	return err
}

// tooLargeError is an answer larger than MaxAnswer.
type tooLargeError struct{ host string }

func (e *tooLargeError) Error() string {
	return fmt.Sprintf("the answer of %s is larger than %d bytes", e.host, MaxAnswer)
}

func (e *tooLargeError) Is(target error) bool { return target == ErrAnswerTooLarge }
