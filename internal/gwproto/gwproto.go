// Package gwproto is the gateway's MQTT contract with the cloud: the
// topics a gateway publishes to and subscribes to, and the JSON of what
// travels on them besides Thingsee messages (the rejection report, the
// gateway's status, the mesh keys and node list, firmware notices). The
// ingest (cloud side) and the gateway agent both build on it, so the two
// ends cannot drift apart. It imports only the standard library and the
// public receiver package (the sealed-body format of the mesh keys).
//
// Topics (serial is the gateway's, its certificate's CN):
//
//	v1/gw/{serial}/up              gateway → cloud: Thingsee messages (QoS 1)
//	v1/gw/{serial}/status          gateway → cloud: Status (QoS 1)
//	v1/gw/{serial}/down/errors     cloud → gateway: Report of rejected messages
//	v1/gw/{serial}/down/keys       cloud → gateway: the mesh keys, sealed to the gateway's key-delivery key (retained)
//	v1/gw/{serial}/down/nodes      cloud → gateway: NodeList, the authorized sensor nodes (retained)
//	v1/gw/{serial}/down/firmware   cloud → gateway: FirmwareNotice of a rollout (retained)
package gwproto

import "time"

// Prefix starts every gateway topic.
const Prefix = "v1/gw/"

// UpTopic is where a gateway publishes Thingsee messages.
func UpTopic(serial string) string { return Prefix + serial + "/up" }

// StatusTopic is where a gateway publishes its Status.
func StatusTopic(serial string) string { return Prefix + serial + "/status" }

// DownTopic is the root of what the cloud sends a gateway; a gateway may
// subscribe to it and below it only.
func DownTopic(serial string) string { return Prefix + serial + "/down" }

// ErrorsTopic is where a gateway learns which of its messages were rejected.
func ErrorsTopic(serial string) string { return DownTopic(serial) + "/errors" }

// KeysTopic carries the mesh keys (SealedKeys), retained.
func KeysTopic(serial string) string { return DownTopic(serial) + "/keys" }

// NodesTopic carries the authorized node list (NodeList), retained.
func NodesTopic(serial string) string { return DownTopic(serial) + "/nodes" }

// FirmwareTopic carries firmware rollout notices (FirmwareNotice), retained.
func FirmwareTopic(serial string) string { return DownTopic(serial) + "/firmware" }

// Report is what a gateway learns of an upload's rejected messages, on
// ErrorsTopic.
type Report struct {
	// ReceivedAt is when the upload arrived (UTC).
	ReceivedAt time.Time `json:"receivedAt"`
	// PacketID is the upload's packet id when the front end's protocol has
	// one (MQTT); 0 is omitted.
	PacketID uint16 `json:"packetId,omitempty"`
	// Accepted is how many messages of the upload were valid.
	Accepted int `json:"accepted"`
	// Rejected names the first rejections (at most 50), in payload order.
	Rejected []ReportedRejection `json:"rejected"`
	// More counts the rejections beyond those named (all are stored: GET
	// /v1/tenants/{t}/rejected lists them).
	More int `json:"more,omitempty"`
}

// Total is how many rejections the report stands for.
func (r *Report) Total() int { return len(r.Rejected) + r.More }

// ReportedRejection is one rejected message of a Report.
type ReportedRejection struct {
	// Index is the message's position in the payload, -1 for the whole payload.
	Index int `json:"index"`
	// Code is the stable rejection code (thingsee.* or ingest.*, each in
	// docs/errors.md).
	Code string `json:"code"`
	// Field is the offending field, "" when the problem is not one field's.
	Field string `json:"field,omitempty"`
	// Reason is one sentence saying what is wrong.
	Reason string `json:"reason"`
	// TsmID is the message's tsmId when it is a valid one.
	TsmID int `json:"tsmId,omitempty"`
	// Tuid is the message's tsmTuid as far as it could be read.
	Tuid string `json:"tsmTuid,omitempty"`
}

// MaxStatusBytes bounds a Status payload.
const MaxStatusBytes = 4 << 10

// Status is what a gateway tells the cloud of itself on StatusTopic (QoS
// 1): on every connect, and again when something in it changes (at most
// once a minute). The cloud shows it on the gateway (GET
// /v1/tenants/{t}/gateways/{serial}: lastSeen, firmware, queueDepth, mesh).
type Status struct {
	// AgentVersion is the agent's version.
	AgentVersion string `json:"agentVersion"`
	// FirmwareVersion is the version of the firmware in the active slot,
	// "" before the first install.
	FirmwareVersion string `json:"firmwareVersion,omitempty"`
	// Slot is the active firmware slot, "a" or "b".
	Slot string `json:"slot,omitempty"`
	// QueueDepth is how many messages wait in the store-and-forward queue.
	QueueDepth int `json:"queueDepth"`
	// QueueDropped is how many the queue dropped or refused when full.
	QueueDropped uint64 `json:"queueDropped"`
	// Mesh counts the mesh frames the agent took and dropped.
	Mesh MeshCounters `json:"mesh"`
	// KeyDeliveryKey is the gateway's key-delivery public key: a raw
	// X25519 key (32 bytes, base64 in JSON) whose private half never leaves
	// the gateway; the cloud seals the mesh keys to it (KeysTopic).
	KeyDeliveryKey []byte `json:"keyDeliveryKey,omitempty"`
	// Renewal is the last certificate renewal's failure, "" when the last
	// one succeeded or none was due (the old certificate stays in use
	// while it is valid).
	Renewal string `json:"renewal,omitempty"`
	// Time is the gateway's clock when it sent the status.
	Time time.Time `json:"time"`
}

// MeshCounters counts mesh frames: Accepted, and Dropped by reason
// (replay, forged, truncated, malformed, unknown_node, stale_epoch,
// unknown_network).
type MeshCounters struct {
	Accepted uint64            `json:"accepted"`
	Dropped  map[string]uint64 `json:"dropped,omitempty"`
}

// The payload on KeysTopic is a sealed body in the receiver package's
// format (HPKE: X25519, HKDF-SHA256, AES-256-GCM) sealed to the gateway's
// own KeyDeliveryKey, whose plaintext is the tenant's mesh key set as JSON
// (internal/mesh KeySet: {"networkId","version","keys":[{"epoch","key",
// "notAfter"}]}). Only the gateway that made that key can open it: not
// another gateway, not the broker.

// NodeList is the tenant's authorized sensor nodes of a mesh network, on
// NodesTopic (retained). A newer Version replaces an older one.
type NodeList struct {
	NetworkID uint32   `json:"networkId"`
	Version   uint64   `json:"version"`
	Nodes     []uint32 `json:"nodes"`
}

// FirmwareNotice tells a gateway of a firmware rollout that targets it, on
// FirmwareTopic (retained): the agent then updates its TUF metadata and
// fetches the target.
type FirmwareNotice struct {
	RolloutID string `json:"rolloutId"`
	Target    string `json:"target"`
	Version   string `json:"version"`
}
