package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Problem is an RFC 9457 problem details object with iotransit's code and
// request id: the body of every refusal of the API (application/problem+json).
// As an error it is what a client gets for a refusal.
type Problem struct {
	// Type is https://iotransit.dev/problems/<code>.
	Type string `json:"type"`
	// Title is the public message of the code, the same for every
	// occurrence of it.
	Title string `json:"title"`
	// Status is the HTTP status.
	Status int `json:"status"`
	// Detail says what was wrong with this request, when there is more to say.
	Detail string `json:"detail,omitempty"`
	// Code is the stable error code, component.name (docs/errors.md); branch
	// on this.
	Code string `json:"code"`
	// RequestID is the X-Request-Id of the request, to quote to the operator.
	RequestID string `json:"requestId"`
}

// Error renders "code: title: detail (request id)", with http_<status> as
// the code of an answer that had none.
func (p *Problem) Error() string {
	var b strings.Builder
	code := p.Code
	if code == "" {
		code = fmt.Sprintf("http_%d", p.Status)
	}
	b.WriteString(code)
	if p.Title != "" {
		b.WriteString(": " + p.Title)
	}
	if p.Detail != "" {
		b.WriteString(": " + p.Detail)
	}
	if p.RequestID != "" {
		b.WriteString(" (request " + p.RequestID + ")")
	}
	return b.String()
}

// OAuthError is an RFC 6749 §5.2 error answer of the token endpoint, which
// OAuth2 client libraries parse, with the request id.
type OAuthError struct {
	// Code is the RFC 6749 error code: invalid_request, invalid_client,
	// invalid_scope, unsupported_grant_type or slow_down.
	Code string `json:"error"`
	// Description says more, for people.
	Description string `json:"error_description,omitempty"`
	// RequestID is the X-Request-Id of the request.
	RequestID string `json:"requestId"`
	// Status is the HTTP status (not in the JSON).
	Status int `json:"-"`
}

// Error renders "code: description (request id)".
func (e *OAuthError) Error() string {
	s := e.Code
	if e.Description != "" {
		s += ": " + e.Description
	}
	if e.RequestID != "" {
		s += " (request " + e.RequestID + ")"
	}
	return s
}

// ErrorCode returns the code of the API refusal in err's chain (a
// *Problem's Code, an *OAuthError's Code), or "" when err is not one.
func ErrorCode(err error) string {
	var p *Problem
	if errors.As(err, &p) {
		return p.Code
	}
	var oe *OAuthError
	if errors.As(err, &oe) {
		return oe.Code
	}
	return ""
}

// TransportKind says why a request did not get an answer.
type TransportKind int

// Transport failures.
const (
	// TransportOther is a failure none of the others describe.
	TransportOther TransportKind = iota
	// TransportTimeout: no answer within Config.Timeout.
	TransportTimeout
	// TransportCanceled: the caller's context was canceled.
	TransportCanceled
	// TransportUnknownCA: the server certificate is not signed by a CA the
	// client trusts (Config.CAPEM).
	TransportUnknownCA
	// TransportHostname: the server certificate is not valid for the name
	// the client connected to.
	TransportHostname
	// TransportCertificate: the server certificate is otherwise invalid
	// (expired, not yet valid, wrong usage).
	TransportCertificate
	// TransportNotTLS: the server did not answer with TLS (an HTTP or other
	// port).
	TransportNotTLS
	// TransportDNS: the server name does not resolve.
	TransportDNS
	// TransportConnect: the connection was refused or could not be made.
	TransportConnect
)

var transportKindNames = map[TransportKind]string{
	TransportOther: "other", TransportTimeout: "timeout", TransportCanceled: "canceled",
	TransportUnknownCA: "unknown_ca", TransportHostname: "hostname", TransportCertificate: "certificate",
	TransportNotTLS: "not_tls", TransportDNS: "dns", TransportConnect: "connect",
}

// String returns the snake_case name of the kind.
func (k TransportKind) String() string {
	if s, ok := transportKindNames[k]; ok {
		return s
	}
	return "unknown"
}

// TransportError is a request that got no answer. Its message is a
// sentence that names the server and what went wrong; a program can add
// its own advice by Kind (which option sets the CA, the timeout, the
// server).
type TransportError struct {
	// Kind says what went wrong.
	Kind TransportKind
	// Server is the server's host[:port].
	Server string
	// Timeout is the request timeout, for TransportTimeout.
	Timeout time.Duration
	// Err is the underlying error.
	Err error
	msg string
}

// Error returns the sentence that names the server and what went wrong.
func (e *TransportError) Error() string { return e.msg }

// Unwrap returns the underlying error.
func (e *TransportError) Unwrap() error { return e.Err }

// explain turns a transport error into a *TransportError naming the server
// and what to check.
func (c *Client) explain(ctx context.Context, err error) error {
	host := c.base.Host
	e := &TransportError{Server: host, Err: err}
	var (
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		invalid   x509.CertificateInvalidError
		recordErr tls.RecordHeaderError
		dnsErr    *net.DNSError
		opErr     *net.OpError
		netErr    net.Error
	)
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) ||
		errors.As(err, &netErr) && netErr.Timeout():
		e.Kind, e.Timeout = TransportTimeout, c.timeout
		e.msg = fmt.Sprintf("no answer from %s within %s", host, c.timeout)
	case errors.Is(err, context.Canceled):
		e.Kind, e.msg = TransportCanceled, fmt.Sprintf("request to %s canceled", host)
	case errors.As(err, &unknownCA):
		e.Kind = TransportUnknownCA
		e.msg = fmt.Sprintf("cannot verify the server certificate of %s: it is not signed by a trusted CA", host)
	case errors.As(err, &hostErr):
		e.Kind = TransportHostname
		e.msg = fmt.Sprintf("the server certificate of %s is not valid for that name: %v", host, hostErr)
	case errors.As(err, &invalid):
		e.Kind = TransportCertificate
		e.msg = fmt.Sprintf("the server certificate of %s is not valid: %v", host, invalid)
	case errors.As(err, &recordErr) || errors.Is(err, http.ErrSchemeMismatch):
		e.Kind = TransportNotTLS
		e.msg = fmt.Sprintf("%s did not answer with TLS: is it an HTTPS API address?", host)
	case errors.As(err, &dnsErr):
		e.Kind = TransportDNS
		e.msg = fmt.Sprintf("cannot resolve the server name %q: %v", dnsErr.Name, dnsErr.Err)
	case errors.As(err, &opErr) && opErr.Op == "dial":
		e.Kind = TransportConnect
		e.msg = fmt.Sprintf("cannot connect to the server at %s: %v", host, opErr.Err)
	default:
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		e.msg = fmt.Sprintf("request to %s failed: %v", host, err)
	}
	return e
}
