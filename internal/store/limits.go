package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/names"
)

// A tenant's streams are bounded by age and bytes: the node's (Config),
// or the tenant's own (SetTenantLimits: its security policy). Bytes bound
// a stream in one of two ways. A retention bound (Config.MaxBytes, the
// policy's retention.messagesMaxBytes) discards the oldest messages to
// make room, delivered or not. A stored-bytes quota (Config.StoredBytes,
// the policy's quotas.storedBytes) refuses new writes when the stream is
// full (JetStream's DiscardNew): the publish fails (Full), the ingest
// answers the gateway "quota exceeded" and acknowledges nothing, and what
// is stored stays until its age passes the retention.
//
// JetStream traps, checked against nats-server 2.15.2:
//   - DiscardNew with a per-subject limit (MaxMsgsPerSubject) stores a
//     message at the subject's limit by discarding that subject's oldest
//     unless DiscardNewPerSubject is set (nats-server #2831, #4247): our
//     streams set no per-subject limit.
//   - Lowering MaxBytes below what a stream holds discards its oldest
//     messages under DiscardOld, and did so under DiscardNew too in old
//     servers (nats-server #2589, #4775); 2.15's file store enforces the
//     byte limit on a config update only under DiscardOld
//     (fileStore.enforceBytesLimit). A quota lowered below what is stored
//     (and a switch from a retention bound to a quota) keeps every message:
//     TestStoreQuotaLoweredKeepsMessages guards it.
//   - A stream's MaxAge applies under both policies: a full stream frees
//     room as its messages age out.

// TenantLimits are a tenant's own bounds of its streams; a zero member
// takes the node's (Config).
type TenantLimits struct {
	// MessagesMaxAge and RejectedMaxAge are the retention of the message
	// and rejected streams.
	MessagesMaxAge, RejectedMaxAge time.Duration
	// MessagesMaxBytes bounds the message stream, the oldest going first.
	MessagesMaxBytes int64
	// StoredBytes is the stored-bytes quota of the message stream and of
	// the rejected stream, each: new writes are refused when full. It wins
	// over MessagesMaxBytes.
	StoredBytes int64
}

// StreamLimits are the bounds one stream is configured with.
type StreamLimits struct {
	MaxAge time.Duration
	// MaxBytes bounds the stream (0: unlimited).
	MaxBytes int64
	// Quota is true when MaxBytes refuses new writes (DiscardNew) rather
	// than discarding the oldest.
	Quota bool
}

func (l StreamLimits) discard() jetstream.DiscardPolicy {
	if l.Quota && l.MaxBytes > 0 {
		return jetstream.DiscardNew
	}
	return jetstream.DiscardOld
}

// Limits are the bounds of a tenant's message and rejected streams.
type Limits struct {
	Messages, Rejected StreamLimits
}

// SetTenantLimits sets where EnsureTenant reads a tenant's own bounds of
// its streams: its security policy. EnsureTenant applies them; call it
// again when they change.
func (s *Store) SetTenantLimits(fn func(tenant string) TenantLimits) {
	s.tenantLimits.Store(&fn)
}

// Limits returns the bounds of tenant's streams: its own
// (SetTenantLimits) where it has them, else the node's ("" names no
// tenant: the node's). A stored-bytes quota (the tenant's, else the
// node's) wins over a retention bound of bytes; the tenant's retention
// bound wins over the node's quota.
func (s *Store) Limits(tenant string) Limits {
	var t TenantLimits
	if fn := s.tenantLimits.Load(); fn != nil && tenant != "" {
		t = (*fn)(tenant)
	}
	or := func(v, def time.Duration) time.Duration {
		if v > 0 {
			return v
		}
		return def
	}
	l := Limits{
		Messages: StreamLimits{MaxAge: or(t.MessagesMaxAge, s.cfg.Retention), MaxBytes: s.cfg.MaxBytes},
		Rejected: StreamLimits{MaxAge: or(t.RejectedMaxAge, s.cfg.RejectedRetention), MaxBytes: s.cfg.MaxBytes},
	}
	quota := t.StoredBytes
	if quota <= 0 {
		quota = s.cfg.StoredBytes
	}
	if quota > 0 {
		l.Rejected = StreamLimits{MaxAge: l.Rejected.MaxAge, MaxBytes: quota, Quota: true}
	}
	switch {
	case t.StoredBytes > 0:
		l.Messages.MaxBytes, l.Messages.Quota = t.StoredBytes, true
	case t.MessagesMaxBytes > 0:
		l.Messages.MaxBytes = t.MessagesMaxBytes
	case quota > 0:
		l.Messages.MaxBytes, l.Messages.Quota = quota, true
	}
	return l
}

func orUnlimited(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// Full reports whether err is a write that JetStream refused because the
// stream holds its byte limit under DiscardNew (a stored-bytes quota).
// The server answers it as a store failure (10077) whose description is
// its fixed ErrMaxBytes text; TestStoreQuotaRefusesNewWrites catches a
// server that changes it.
func Full(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jsStreamStoreFailed && apiErr.Description == "maximum bytes exceeded"
}

// jsStreamStoreFailed is JetStream's error code of a store failure
// (JSStreamStoreFailedF).
const jsStreamStoreFailed jetstream.ErrorCode = 10077

// Usage is what a tenant's streams hold now, in bytes.
type Usage struct {
	MessagesBytes, RejectedBytes int64
}

// Usage reads how many bytes the tenant's message and rejected streams
// hold.
func (s *Store) Usage(ctx context.Context, tenant string) (Usage, error) {
	var u Usage
	for _, st := range []struct {
		name string
		dst  *int64
	}{{names.MessageStream(tenant), &u.MessagesBytes}, {names.RejectedStream(tenant), &u.RejectedBytes}} {
		str, err := s.js.Stream(ctx, st.name)
		if err != nil {
			return Usage{}, fmt.Errorf("store: stream %s: %w", st.name, err)
		}
		info, err := str.Info(ctx)
		if err != nil {
			return Usage{}, fmt.Errorf("store: stream %s: %w", st.name, err)
		}
		*st.dst = int64(info.State.Bytes)
	}
	return u, nil
}
