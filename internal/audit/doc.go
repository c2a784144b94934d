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
// Callers must never pass secrets (tokens, keys, passwords) in an Event:
// entries are kept forever and are readable by the tenant's auditors.
package audit
