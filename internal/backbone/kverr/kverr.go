// Package kverr classifies the errors of JetStream key-value writes the same
// way on single-replica and replicated buckets.
package kverr

import (
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// Conflict reports whether err is a KV write that lost a race: Create found
// the key, or Update found another revision. A single-replica bucket says so
// with error 10071 (jetstream.ErrKeyExists); a replicated one, for a subject
// with a write still in process, with 10164 (jetstream.ErrKeyRevisionMismatch
// matches both).
func Conflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}
