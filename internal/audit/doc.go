// Package audit owns the per-tenant audit log of iotransit: a hash-chained,
// append-only record of who did what to which target, when, from where and
// with what outcome (DESIGN §10), with Ed25519-signed checkpoints, and the
// verifier that proves the log was not edited.
//
// # Storage
//
// Each tenant has one JetStream stream, AUD_{tenant}, with two subjects:
// audit.{tenant}.entry holds the entries (JSON of Entry) and
// audit.{tenant}.checkpoint holds the checkpoints (JSON of Checkpoint). The
// reserved tenant "_system" records platform-level events (tenant creation,
// refusals that cannot be attributed to a tenant). The stream is file-backed,
// kept forever unless Config.Retention is set, and created with DenyDelete
// and DenyPurge, which JetStream never lets anyone switch off again: through
// the NATS API an entry can only be removed by deleting the whole stream.
//
// Lists filtered by actor, action or target read a second stream,
// AUDX_{tenant}: an index derived from the log and brought up to date
// before each such list (index.go). It holds no entry and changes nothing
// in the log; Verify never reads it.
//
// Entries are numbered 1, 2, 3 ... per tenant without gaps. Every entry
// carries the hash of the one before it (Prev) and its own hash (Hash), so
// that the last hash commits to the whole history. Several processes may
// write one tenant: each publish is conditional on the last stream sequence
// of the entry subject (JetStream optimistic concurrency), and a writer that
// lost the race re-reads the head and tries again.
//
// # Canonical encoding (version 1)
//
// An offline verifier must reproduce these bytes exactly. Integers are big
// endian. str(s) is u32(number of bytes of s) followed by the UTF-8 bytes of
// s. A time is i64(Unix seconds) followed by u32(nanoseconds within the
// second, 0..999999999), so every instant has exactly one encoding.
//
// The hash of an entry is the lowercase hex SHA-256 of:
//
//	str("iotransit/audit/v1/entry")
//	str(tenant) u64(seq) i64(unix seconds) u32(nanoseconds)
//	str(actor) str(action) str(target) str(source) str(outcome)
//	u32(number of detail pairs)
//	  then for each pair, keys in ascending byte order: str(key) str(value)
//	str(prev)
//
// Prev is the hash of the previous entry as its 64 lowercase hex characters
// (64 "0" characters for entry 1), encoded with str like any other text.
//
// A checkpoint's signature is pure Ed25519 (RFC 8032, no pre-hash) over:
//
//	str("iotransit/audit/v1/checkpoint")
//	str(tenant) u64(seq) str(hash) i64(unix seconds) u32(nanoseconds)
//	str(keyID)
//
// where keyID is the lowercase hex of the first 8 bytes of the SHA-256 of
// the 32-byte public key. The two domain tags keep an entry preimage from
// ever being read as a checkpoint message and the other way round.
//
// # Stored form
//
// The hash covers what an entry means. So that no stored byte can change
// unnoticed, not even in a way that keeps the meaning (another spelling of
// the time, an escaped letter, a repeated key), Append writes one exact JSON
// form and Verify refuses any other: keys in the order of the Entry fields,
// no spaces, "detail" only when not empty with its keys in byte order, the
// time as RFC 3339 in UTC with nanoseconds and without trailing zeros, and
// strings escaped only where JSON requires it ('"' and '\' with a
// backslash, bytes below 0x20 as \u00xx in lowercase hex). Checkpoints are
// stored the same way, with the signature in padded standard base64. Readers
// may use any JSON decoder; the stored form matters only to a verifier of
// raw stream messages.
//
// # What verification proves, and what it cannot
//
// Verify and VerifyEntries detect any change to the content of a stored
// entry, a deleted, duplicated or reordered entry, a tail cut off below the
// last signed checkpoint, a checkpoint that is forged or signed by another
// key, and a rewrite of entries whose hashes were recomputed by someone who
// knows this algorithm but not the signing key (the signed checkpoint no
// longer matches). The report names the first entry in doubt. A recomputed
// rewrite can only be narrowed down to the entries between two checkpoints,
// because the log does not keep the original hashes anywhere else.
//
// Entries after the last checkpoint are protected by the chain alone until
// the next checkpoint is signed (at most CheckpointEvery entries or
// CheckpointInterval later); the report says how many there are. A process
// signs the head it appended itself; after a crash, the tail left unsigned
// is signed as found by the next process that appends to the tenant. Within the
// process that wrote them, Verify also compares the stream with the head it
// remembers, which catches a rewritten or cut tail even before it is signed.
// Deleting the whole stream, checkpoints included, leaves nothing to verify:
// keep copies of checkpoints outside the cluster when that matters. Only one
// signing key is trusted at a time; rotating it needs a verifier that
// accepts several keys.
//
// # What is never lost, what blocks, what fails closed
//
// No audit entry is dropped silently; where one cannot be written, the
// log says so, or the action does not happen:
//
//   - Gateway connection events (connects, disconnects, refusals) go
//     through an Appender. Enqueue waits at most AppenderWait (100 ms) for
//     room in a full queue, so that a connection is never held long. An
//     event that still does not fit, or whose append fails, is counted for
//     its tenant (how many, the first and last time, which actions), and
//     as soon as the log moves again one entry of action
//     ActionEventsDropped ("audit.events_dropped") says "N events dropped
//     between A and B" (tried again every second while the log is
//     unavailable). Only at shutdown, after Close, are events counted
//     without an entry (metric iotransit_audit_events_dropped_total,
//     why=closed). What reaches the Appender in the first place is bounded
//     upstream by the ingest's event budget, which summarises with counts
//     too.
//   - A change through the API fails closed (package api, auditrecord.go):
//     before its handler runs, the dispatcher appends a write-ahead entry
//     ("api.change", outcome "started", the request id); if that append
//     fails, the change is refused with 503 and code audit.unavailable
//     (ErrUnavailable) and nothing changes. The handler's own entry, with
//     the same request id, records the outcome. If the log fails between
//     the two, the change stands with its "started" entry, and the missing
//     outcome is logged and counted (iotransit_api_audit_failed_total).
//   - Reads of customer data through the API (messages, rejected messages,
//     dead letters, the WebSocket stream) are recorded as "data.read" per
//     credential and resource, at most one entry per 60 s window: the
//     first read at once, the rest summed at the window's end or at
//     shutdown (package api, readaudit.go). A read is never refused for
//     its entry; an entry that cannot be written is kept in the sum.
//
// Every one of these is an ordinary chained entry: Verify of a log after
// any of them is ok.
//
// Callers must never pass secrets (tokens, keys, passwords) in an Event:
// entries are kept forever and are readable by the tenant's auditors.
package audit
