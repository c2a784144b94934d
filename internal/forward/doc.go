// Package forward delivers each tenant's stored messages to the endpoints
// the tenant configured (integrations). It has two parts, which meet in the
// tenant's integrations bucket (JetStream KV):
//
//   - The Registry (registry.go) holds the integrations as tenant
//     resources; it is what the API calls. It checks an integration (its
//     common fields here, its type's settings through the target's
//     Factory), seals its secrets with the tenant's data key (secrets.go),
//     keeps names unique across nodes with atomic claims (names.go), writes
//     the record to the bucket, and lists and re-drives dead letters
//     (deadletters.go).
//   - The Engine (engine.go) follows every tenant's integrations bucket on
//     every node and delivers; it never writes integrations. For each
//     active integration it runs a worker (worker.go) that holds a lease
//     (lease.go) so one node delivers it, reads the integration's durable
//     JetStream consumer (consumer.go), batches by count and time, keeps
//     order per device (one batch in flight per integration), retries with
//     exponential backoff and jitter that honours Retry-After, moves
//     messages older than the integration's max age to its dead-letter
//     stream, and keeps the delivery state in KV.
//
// The flow: the API calls the Registry, which writes the record; each
// node's Engine sees the change and starts, restarts or stops the worker;
// the worker holding the lease builds a Target through the type's Factory
// and delivers. Both parts read records, open secrets and read the
// delivery state through one piece (records.go). The one call from the
// registry to the engine is Delete's: this node's worker is stopped before
// the integration's consumer, dead letters and state go. Retry-now
// (retrynow.go) travels the same way as a change: the Registry puts a
// retry key in the bucket, and the Engine of the node delivering the
// integration ends its worker's backoff wait. A re-driven message's max
// age counts from its re-drive (Message.ageFrom).
//
// Targets (webhook, MQTT, Azure IoT Hub, AWS IoT Core) live in subpackages
// behind the small Target interface (target.go); the node passes the
// factories in (Deps).
package forward
