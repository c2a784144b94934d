// What the registry and the engine are built from: their configuration and
// the dependencies the node passes in.

package forward

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotransit/iotransit/internal/forward/egress"
	"github.com/iotransit/iotransit/internal/store"
)

// Config tunes the engine; the registry uses Policy and ParseKey.
type Config struct {
	// NodeID names this node in leases (default: random).
	NodeID string
	// Policy guards outbound connections (SSRF).
	Policy egress.Policy
	// AckWait is how long a fetched message may stay unacknowledged before
	// JetStream redelivers it (default 30s; held batches are kept alive).
	AckWait time.Duration
	// RetryBase and RetryMax bound the exponential backoff (1s, 5m).
	RetryBase, RetryMax time.Duration
	// DeliveryTimeout bounds one delivery attempt (default 60s).
	DeliveryTimeout time.Duration
	// LeaseTTL is how long a node holds an integration without renewing (15s).
	LeaseTTL time.Duration
	// ParseKey turns a public key PEM into a Sealer and its key id.
	ParseKey func(pemBytes []byte) (Sealer, string, error)
	// DeadLetterRetention is how long dead letters are kept, re-driven or
	// not, unless the tenant's policy says otherwise (0: until re-driven or
	// deleted; DefaultConfig: 30 days).
	DeadLetterRetention time.Duration
}

func (c *Config) defaults() {
	if c.NodeID == "" {
		b := make([]byte, 6)
		_, _ = rand.Read(b)
		c.NodeID = "node-" + base64.RawURLEncoding.EncodeToString(b)
	}
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
	if c.RetryBase == 0 {
		c.RetryBase = time.Second
	}
	if c.RetryMax == 0 {
		c.RetryMax = 5 * time.Minute
	}
	if c.DeliveryTimeout == 0 {
		c.DeliveryTimeout = time.Minute
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 15 * time.Second
	}
}

// sealer returns what seals the payloads of an integration with payload
// encryption (nil without it, or without ParseKey).
func (c Config) sealer(in Integration) (Sealer, error) {
	if in.Encryption == nil || c.ParseKey == nil {
		return nil, nil
	}
	s, _, err := c.ParseKey([]byte(in.Encryption.PublicKeyPEM))
	return s, err
}

// Deps are what the registry and the engine work with. The registry uses
// neither Streams nor Metrics.
type Deps struct {
	// JetStream holds the tenants' message streams, the integrations'
	// consumers and their dead-letter streams.
	JetStream jetstream.JetStream
	// KV opens the integrations and delivery state buckets.
	KV KVProvider
	// Streams creates the dead-letter streams and the leases bucket.
	Streams StreamProvider
	// Keys seals and opens integration secrets.
	Keys Keys
	// Messages decodes stored messages and re-drives dead letters.
	Messages Messages
	// Factories builds the targets of each integration type.
	Factories map[string]Factory
	// Metrics registers the delivery metrics (nil: not registered).
	Metrics prometheus.Registerer
	// Logger logs.
	Logger *slog.Logger
}

// Factory builds the targets of one integration type.
type Factory interface {
	// Prepare checks the type's settings with the secrets (fault errors,
	// every problem at once) and fills defaults.
	Prepare(ctx context.Context, in *Integration, sec *Secrets, pol egress.Policy) error
	// New builds a target.
	New(ctx context.Context, in Integration, sec Secrets, pol egress.Policy, sealer Sealer) (Target, error)
}

// Messages reads and re-drives messages of tenants' streams (store.Store).
type Messages interface {
	Decode(ctx context.Context, tenant string, seq uint64, stored time.Time, h nats.Header, data []byte) (store.Message, error)
	Redrive(ctx context.Context, tenant, integration string, h nats.Header, data []byte) error
}

// StreamProvider creates streams and TTL buckets (backbone.Backbone).
type StreamProvider interface {
	Stream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error)
	KVWithTTL(ctx context.Context, bucket string, ttl time.Duration) (jetstream.KeyValue, error)
}

// Keys seals integration secrets under the tenant's data key (kms.Keyring).
type Keys interface {
	Seal(ctx context.Context, tenant string, plaintext, aad []byte) ([]byte, error)
	Open(ctx context.Context, tenant string, sealed, aad []byte) ([]byte, error)
}

// KVProvider creates or opens KV buckets (backbone.Backbone).
type KVProvider interface {
	KV(ctx context.Context, bucket string, history uint8) (jetstream.KeyValue, error)
}
