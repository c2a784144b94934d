// Package names is the one catalogue of the names iotransit gives its
// JetStream objects: streams, subjects, consumers and key-value buckets.
// Every other package builds a name through it, so the layout of the
// backbone can be read (and changed) in one place.
//
// A name is built only from validated ids: tenant ids ([a-z0-9-], or the
// platform's "_system"), gateway serials and sensor TUIDs ([A-Z0-9]),
// integration ids and tsmIds. Every part is checked to be one NATS token
// (non-empty, no '.', '*', '>', white space or control character), and a
// part that is not one panics: a caller passing unvalidated input is a bug
// that could otherwise reach another tenant's subjects. Filters take the
// wildcard "*" where their documentation says so.
package names

import (
	"fmt"
	"strconv"
)

// Buckets shared by the whole deployment (not per tenant).
const (
	// KMSBucket held the wrapped data keys of kms before KMSStream: a node
	// moves its keys into KMSStream at start and deletes it.
	KMSBucket = "iotransit_kms"
	// SystemBucket holds platform keys (JWT, audit signing) and the server CA, sealed.
	SystemBucket = "iotransit_system"
	// TenantsBucket holds the tenants of the registry.
	TenantsBucket = "iotransit_tenants"
	// SerialsBucket reserves gateway serials across tenants.
	SerialsBucket = "iotransit_serials"
	// EnrollmentBucket holds enrollment tokens (hashed).
	EnrollmentBucket = "iotransit_enrollment"
	// CredentialIndexBucket maps API key and OAuth2 client ids to their tenant.
	CredentialIndexBucket = "iotransit_credentials"
	// LeasesBucket holds the forwarding leases (a TTL bucket).
	LeasesBucket = "iotransit_leases"
	// MeshBucket holds every tenant's mesh network (its keys sealed by
	// kms) and authorized node list, under MeshKey: one bucket, so that
	// every node follows all changes with one watch.
	MeshBucket = "iotransit_mesh"
	// FactoryBucket holds the gateways made by factory provisioning, with
	// their hashed claim codes.
	FactoryBucket = "iotransit_factory"
	// FirmwareKeysBucket holds each tenant's online TUF keys (snapshot and
	// timestamp), sealed by kms under the tenant's data key.
	FirmwareKeysBucket = "iotransit_firmware_keys"
	// FirmwareNoticesBucket holds the firmware notice of each gateway in a
	// rollout (key {tenant}.{serial}); every node republishes it retained.
	FirmwareNoticesBucket = "iotransit_firmware_notices"
)

// The stream of kms's wrapped data keys (kms.StreamStore): each key is the
// subject KMSKeyPrefix + its name ("<tenant>.v<N>", "<tenant>.shredded",
// "_root.check"), and its last message is its value. Unlike a KV bucket the
// stream allows deleting messages, so that a replaced or destroyed key is
// erased from the stream's files (SecureDeleteMsg).
const (
	KMSStream    = "KMS_KEYS"
	KMSKeyPrefix = "kms.keys."
	KMSKeys      = KMSKeyPrefix + ">"
)

// MeshKey is the key of one part ("network" or "nodes") of a tenant's mesh
// in MeshBucket.
func MeshKey(tenant, part string) string { return tok(tenant) + "." + tok(part) }

// GatewayStateBucket is the name of a tenant's bucket of gateway state:
// each gateway's last status and when it was last seen (written at a
// bounded rate, not on every message).
func GatewayStateBucket(tenant string) string { return "iot_" + tok(tenant) + "_gateway_state" }

// MessageStream is the name of a tenant's stream of accepted messages.
func MessageStream(tenant string) string { return "MSG_" + tok(tenant) }

// RejectedStream is the name of a tenant's stream of rejected messages.
func RejectedStream(tenant string) string { return "REJ_" + tok(tenant) }

// AuditStream is the name of a tenant's audit log stream.
func AuditStream(tenant string) string { return "AUD_" + tok(tenant) }

// AuditIndexStream is the name of a tenant's audit index stream: which
// entries name an actor, an action or a target (derived from AUD_{tenant},
// which alone is verified).
func AuditIndexStream(tenant string) string { return "AUDX_" + tok(tenant) }

// DeadLetterStream is the name of an integration's dead-letter stream.
func DeadLetterStream(tenant, integration string) string {
	return "DLQ_" + tok(tenant) + "_" + tok(integration)
}

// DeadLetterStreamPrefix is what the names of a tenant's dead-letter
// streams start with (tenant ids hold no '_': no other tenant's do).
func DeadLetterStreamPrefix(tenant string) string { return "DLQ_" + tok(tenant) + "_" }

// GatewaysBucket is the name of a tenant's gateway registry bucket.
func GatewaysBucket(tenant string) string { return "iot_" + tok(tenant) + "_gateways" }

// CredentialsBucket is the name of a tenant's API key and OAuth2 client bucket.
func CredentialsBucket(tenant string) string { return "iot_" + tok(tenant) + "_credentials" }

// IntegrationsBucket is the name of a tenant's integrations bucket.
func IntegrationsBucket(tenant string) string { return "iot_" + tok(tenant) + "_integrations" }

// IntegrationStateBucket is the name of a tenant's integration delivery-state bucket.
func IntegrationStateBucket(tenant string) string {
	return "iot_" + tok(tenant) + "_integration_state"
}

// FirmwareBucket is the name of a tenant's firmware bucket: its TUF
// repository's metadata versions and its rollouts.
func FirmwareBucket(tenant string) string { return "iot_" + tok(tenant) + "_firmware" }

// FirmwareImages is the name of a tenant's object store of firmware images
// (objects named by their SHA-256).
func FirmwareImages(tenant string) string { return "iot_" + tok(tenant) + "_firmware_images" }

// FirmwareNotice is the key of a gateway's firmware notice in
// FirmwareNoticesBucket.
func FirmwareNotice(tenant, serial string) string { return tok(tenant) + "." + tok(serial) }

// IntegrationConsumer is the name of an integration's durable consumer on
// its tenant's message stream.
func IntegrationConsumer(integration string) string { return "fwd_" + tok(integration) }

// Messages is the subject filter of all a tenant's accepted messages.
func Messages(tenant string) string { return "iot." + tok(tenant) + ".msg.>" }

// Message is the subject of one accepted message.
func Message(tenant, gateway, tuid string, tsmID int) string {
	return string(AppendMessage(make([]byte, 0, 64), tenant, gateway, tuid, tsmID))
}

// AppendMessage appends Message's subject to dst, for a caller that builds
// it with other text in one allocation (the store's hot path).
func AppendMessage(dst []byte, tenant, gateway, tuid string, tsmID int) []byte {
	dst = append(append(append(dst, "iot."...), tok(tenant)...), ".msg."...)
	dst = append(append(append(append(dst, tok(gateway)...), '.'), tok(tuid)...), '.')
	return strconv.AppendInt(dst, int64(tsmID), 10)
}

// MessageFilter is a subject filter of a tenant's messages; gateway, tuid
// and tsmID may each be "*" (any).
func MessageFilter(tenant, gateway, tuid, tsmID string) string {
	return "iot." + tok(tenant) + ".msg." + tokOrAny(gateway) + "." + tokOrAny(tuid) + "." + tokOrAny(tsmID)
}

// Redriven is the subject filter of all messages re-driven to integrations
// of a tenant (they live in the message stream, apart from live messages).
func Redriven(tenant string) string { return "iot." + tok(tenant) + ".redrive.>" }

// RedrivenTo is the subject filter of the messages re-driven to one integration.
func RedrivenTo(tenant, integration string) string {
	return "iot." + tok(tenant) + ".redrive." + tok(integration) + ".>"
}

// RedriveSubject is the subject of one message re-driven to an integration.
func RedriveSubject(tenant, integration, gateway, tuid string, tsmID int) string {
	return "iot." + tok(tenant) + ".redrive." + tok(integration) + "." + tok(gateway) + "." + tok(tuid) + "." + strconv.Itoa(tsmID)
}

// RejectedMessages is the subject filter of a tenant's rejected messages.
func RejectedMessages(tenant string) string { return "iot." + tok(tenant) + ".rej.>" }

// Rejected is the subject of a message rejected from one gateway.
func Rejected(tenant, gateway string) string { return "iot." + tok(tenant) + ".rej." + tok(gateway) }

// DeadLetter is the subject of an integration's dead letters.
func DeadLetter(tenant, integration string) string {
	return "iot." + tok(tenant) + ".dlq." + tok(integration)
}

// DeadLetters is the subject filter of the dead letters of all a tenant's
// integrations (it finds their dead-letter streams, also of an integration
// whose deletion was interrupted).
func DeadLetters(tenant string) string { return "iot." + tok(tenant) + ".dlq.*" }

// RedriveFilter is a subject filter of the messages re-driven to a tenant's
// integrations; integration, gateway, tuid and tsmID may each be "*" (any).
func RedriveFilter(tenant, integration, gateway, tuid, tsmID string) string {
	return "iot." + tok(tenant) + ".redrive." + tokOrAny(integration) + "." + tokOrAny(gateway) + "." + tokOrAny(tuid) + "." + tokOrAny(tsmID)
}

// AuditEntry is the subject of a tenant's audit entries.
func AuditEntry(tenant string) string { return "audit." + tok(tenant) + ".entry" }

// AuditCheckpoint is the subject of a tenant's signed audit checkpoints.
func AuditCheckpoint(tenant string) string { return "audit." + tok(tenant) + ".checkpoint" }

// AuditIndex is the subject of the index entries of one field (actor,
// action or target) and value of a tenant's audit entries; key is the
// value's digest (the audit package makes it one token).
func AuditIndex(tenant, field, key string) string {
	return "auditx." + tok(tenant) + "." + tok(field) + "." + tok(key)
}

// AuditIndexes is the subject filter of all a tenant's audit index entries.
func AuditIndexes(tenant string) string { return "auditx." + tok(tenant) + ".>" }

// ValidToken reports whether s can be one part of a name: non-empty, at
// most 128 bytes, without '.', '*', '>', white space or control characters.
func ValidToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c <= ' ', c == 0x7f, c == '.', c == '*', c == '>':
			return false
		case c >= 0x80: // ids are ASCII
			return false
		}
	}
	return true
}

// tok returns s if it is one valid token and panics otherwise.
func tok(s string) string {
	if !ValidToken(s) {
		panic(fmt.Sprintf("names: %q is not a validated id (one NATS token)", s))
	}
	return s
}

func tokOrAny(s string) string {
	if s == "*" {
		return s
	}
	return tok(s)
}
