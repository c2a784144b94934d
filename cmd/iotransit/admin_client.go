package main

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
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// maxAnswer bounds what the CLI reads of an API answer.
const maxAnswer = 32 << 20

// apiClient calls the HTTPS management API with a bearer credential.
type apiClient struct {
	base    *url.URL
	key     string // never printed
	timeout time.Duration
	hc      *http.Client
}

// newAPIClient checks server and builds a client that trusts the PEM file
// caFile (the system roots when empty) and speaks TLS 1.2 or newer.
func newAPIClient(server, caFile, key string, timeout time.Duration) (*apiClient, error) {
	base, err := parseServerURL(server)
	if err != nil {
		return nil, err
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca %s: no PEM certificate in the file", caFile)
		}
		tlsCfg.RootCAs = pool
	}
	if timeout <= 0 {
		return nil, errors.New("--timeout must be positive")
	}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		TLSClientConfig:     tlsCfg,
		TLSHandshakeTimeout: timeout,
		ForceAttemptHTTP2:   true,
	}
	return &apiClient{base: base, key: key, timeout: timeout, hc: &http.Client{
		Transport: tr,
		// A redirect would be a misconfiguration; never follow one with the
		// credential.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}, nil
}

// parseServerURL accepts https://host[:port] or host[:port]; plain http is
// refused, since the credential would cross the network in the clear.
func parseServerURL(s string) (*url.URL, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("--server is required (or IOTRANSIT_SERVER), e.g. https://localhost:8443")
	}
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("--server %q is not a URL such as https://localhost:8443", s)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("--server %q: only https is supported", s)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("--server %q: give only scheme, host, port and an optional path prefix", u.Redacted())
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return u, nil
}

// apiAnswer is a successful answer.
type apiAnswer struct {
	Status    int
	Body      []byte
	RequestID string
}

// decode decodes the answer's JSON into v.
func (a *apiAnswer) decode(v any) error {
	if err := json.Unmarshal(a.Body, v); err != nil {
		return fmt.Errorf("the server's answer is not the expected JSON (request %s): %v", a.RequestID, err)
	}
	return nil
}

// problem is an RFC 9457 problem details answer of the API.
type problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail,omitempty"`
	Code      string `json:"code"`
	RequestID string `json:"requestId"`
}

// problemError is a refusal of the API: the code, the message and the
// request id, as STYLE §2.3 asks of the CLI.
type problemError struct{ p problem }

func (e *problemError) Error() string {
	var b strings.Builder
	code := e.p.Code
	if code == "" {
		code = fmt.Sprintf("http_%d", e.p.Status)
	}
	b.WriteString(code)
	if e.p.Title != "" {
		b.WriteString(": " + e.p.Title)
	}
	if e.p.Detail != "" {
		b.WriteString(": " + e.p.Detail)
	}
	if e.p.RequestID != "" {
		b.WriteString(" (request " + e.p.RequestID + ")")
	}
	return b.String()
}

// call sends method path with body (JSON-encoded when not nil) and returns
// a 2xx answer, or a *problemError, or an error that explains a network
// or TLS failure in a sentence.
func (c *apiClient) call(ctx context.Context, method, path string, query url.Values, body any, auth bool) (*apiAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	// path holds escaped segments (see seg).
	u := *c.base
	u.RawPath = c.base.EscapedPath() + path
	unescaped, err := url.PathUnescape(u.RawPath)
	if err != nil {
		return nil, fmt.Errorf("bad request path %q", path)
	}
	u.Path = unescaped
	if len(query) > 0 {
		u.RawQuery = query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json, application/problem+json")
	req.Header.Set("User-Agent", "iotransit-cli")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.explain(ctx, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("reading the answer of %s: %w", c.base.Host, c.explain(ctx, err))
	}
	if len(b) > maxAnswer {
		return nil, fmt.Errorf("the answer of %s is larger than %d bytes", c.base.Host, maxAnswer)
	}
	rid := resp.Header.Get("X-Request-Id")
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return &apiAnswer{Status: resp.StatusCode, Body: b, RequestID: rid}, nil
	}
	var p problem
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "application/problem+json" || mt == "application/json" {
		_ = json.Unmarshal(b, &p)
	}
	if p.Status == 0 {
		p.Status = resp.StatusCode
	}
	if p.RequestID == "" {
		p.RequestID = rid
	}
	if p.Code == "" && p.Title == "" {
		p.Title = "the server answered " + resp.Status
	}
	return nil, &problemError{p: p}
}

// explain turns a transport error into a sentence naming the server and
// what to check.
func (c *apiClient) explain(ctx context.Context, err error) error {
	host := c.base.Host
	var (
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		invalid   x509.CertificateInvalidError
		recordErr tls.RecordHeaderError
		dnsErr    *net.DNSError
		opErr     *net.OpError
	)
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("no answer from %s within %s (--timeout)", host, c.timeout)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("request to %s canceled", host)
	case errors.As(err, &unknownCA):
		return fmt.Errorf("cannot verify the server certificate of %s: it is not signed by a trusted CA (give the CA file with --ca or IOTRANSIT_CA)", host)
	case errors.As(err, &hostErr):
		return fmt.Errorf("the server certificate of %s is not valid for that name: %v", host, hostErr)
	case errors.As(err, &invalid):
		return fmt.Errorf("the server certificate of %s is not valid: %v", host, invalid)
	case errors.As(err, &recordErr):
		return fmt.Errorf("%s did not answer with TLS: is it an HTTPS API address?", host)
	case errors.As(err, &dnsErr):
		return fmt.Errorf("cannot resolve the server name %q: %v", dnsErr.Name, dnsErr.Err)
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return fmt.Errorf("cannot connect to the server at %s: %v (is it running, and is --server right?)", host, opErr.Err)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("request to %s failed: %v", host, err)
}
