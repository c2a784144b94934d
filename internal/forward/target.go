// The seam to the target subpackages: what a delivery hands a target, and
// how a target reports a failure.

package forward

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/iotransit/iotransit/client"
)

// Message is one stored message to deliver: the Thingsee object exactly as
// accepted plus the cloud-added fields (Body), and where it is in the
// tenant's stream.
type Message struct {
	Seq        uint64
	ID         string
	Gateway    string
	Tuid       string
	TsmID      int
	ReceivedAt time.Time
	// RedrivenAt is when the message was re-driven from the dead letters
	// (zero otherwise): its max age counts from then.
	RedrivenAt time.Time
	Body       []byte
}

// ageFrom is the time a message's max age counts from.
func (m Message) ageFrom() time.Time {
	if m.RedrivenAt.After(m.ReceivedAt) {
		return m.RedrivenAt
	}
	return m.ReceivedAt
}

// Batch is what one delivery hands to a target. ID is stable across every
// retry of the batch, restarts included (it is the Standard Webhooks
// webhook-id).
type Batch struct {
	ID          string
	Tenant      string
	Integration string
	Messages    []Message
	// Attempt counts deliveries of this batch, from 1.
	Attempt int
}

// JSON returns the batch as a JSON array of the messages' bodies, byte for
// byte (Thingsee's array form).
func (b *Batch) JSON() []byte {
	n := 2
	for _, m := range b.Messages {
		n += len(m.Body) + 1
	}
	buf := bytes.NewBuffer(make([]byte, 0, n))
	buf.WriteByte('[')
	for i, m := range b.Messages {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(m.Body)
	}
	buf.WriteByte(']')
	return buf.Bytes()
}

// Target delivers batches to one customer endpoint. Deliver returns nil only
// when the endpoint has accepted the whole batch; the engine retries
// anything else with backoff, the same batch with the same ID.
type Target interface {
	Deliver(ctx context.Context, b *Batch) error
	Close() error
}

// Sealer encrypts a payload to the customer's public key (HPKE); targets
// seal what they send when the integration has a key.
type Sealer interface {
	Seal(plaintext []byte) ([]byte, error)
}

// RetryAfterError is a failure after which the endpoint asked to wait
// (HTTP Retry-After): the engine waits at least After.
type RetryAfterError struct {
	After time.Duration
	Err   error
}

func (e *RetryAfterError) Error() string {
	return fmt.Sprintf("%v (retry after %s)", e.Err, e.After)
}

func (e *RetryAfterError) Unwrap() error { return e.Err }

// RetryAfter returns the wait an error asks for, 0 if none.
func RetryAfter(err error) time.Duration {
	var ra *RetryAfterError
	if errors.As(err, &ra) {
		return ra.After
	}
	return 0
}

// DeliveryError is a failure with a short public description for the
// integration's state (never secrets or response bodies in full).
type DeliveryError struct {
	// Summary is shown in the integration's lastError, e.g. "HTTP 503" or
	// "connection refused".
	Summary string
	Err     error
}

func (e *DeliveryError) Error() string { return e.Summary + ": " + e.Err.Error() }

func (e *DeliveryError) Unwrap() error { return e.Err }

// Summary returns the public description of a delivery failure.
func Summary(err error) string {
	var de *DeliveryError
	if errors.As(err, &de) {
		return de.Summary
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	return "delivery failed"
}

// FailureCode classifies a delivery failure for a client
// (client.TestResult.Code): a certificate the endpoint showed that is not
// trusted, not for its host or expired, a timeout, or another failure.
// Targets keep the TLS verification error in their DeliveryError's chain.
func FailureCode(err error) string {
	var (
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
		invalid x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &host):
		return client.TestTLSNameMismatch
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return client.TestTLSExpired
	case errors.As(err, &unknown):
		return client.TestTLSUnknownAuthority
	case errors.Is(err, context.DeadlineExceeded), Summary(err) == "timeout":
		return client.TestTimeout
	}
	return client.TestDeliveryFailed
}
