package client

import (
	"context"
	"time"
)

// Re-encryption job states.
const (
	ReencryptRunning = "running"
	ReencryptDone    = "done"
	ReencryptFailed  = "failed"
)

// KMSReencryption is a tenant's re-encryption job: it moves every stored
// record sealed under an older version of the tenant's data key to the
// newest, in the background on one node, from a position it keeps (a
// restarted node resumes there). Stored messages cannot be re-sealed in
// place (a stream's messages are immutable); the job counts, per stream
// and key version, the messages still under each version, which retention
// ages out (docs/SECURITY.md).
type KMSReencryption struct {
	// State is running, done or failed.
	State string `json:"state"`
	// TargetVersion is the newest version when the current pass began; a
	// rotation during the job starts another pass to the newer version.
	TargetVersion uint32 `json:"targetVersion"`
	Pass          int    `json:"pass"`
	// Records is the progress per kind of sealed record, Streams per
	// stream of sealed messages.
	Records []ReencryptRecords `json:"records"`
	Streams []ReencryptStream  `json:"streams"`
	// Node is the node that runs (or ran) the job.
	Node       string     `json:"node,omitempty"`
	StartedAt  time.Time  `json:"startedAt"`
	UpdatedAt  time.Time  `json:"updatedAt"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
	LastError  string     `json:"lastError,omitempty"`
}

// ReencryptRecords is the progress of one kind of sealed record
// (integrations, mesh, tenant-ca, firmware-keys).
type ReencryptRecords struct {
	Kind string `json:"kind"`
	// Total is how many records the pass found, Done how many it went
	// through, Resealed how many of those it re-sealed.
	Total    int  `json:"total"`
	Done     int  `json:"done"`
	Resealed int  `json:"resealed"`
	Finished bool `json:"finished"`
	// Position is the key of the last record done: a resumed job goes on
	// after it.
	Position string `json:"position,omitempty"`
}

// ReencryptStream is one stream of sealed messages as the job counted it.
type ReencryptStream struct {
	// Kind is messages, rejected or deadletters.
	Kind   string `json:"kind"`
	Stream string `json:"stream"`
	// Total is the stream's last sequence when the count began, Position
	// the sequence counted through.
	Total    uint64 `json:"total"`
	Position uint64 `json:"position"`
	Finished bool   `json:"finished"`
	// Versions are the messages counted per data key version.
	Versions []ReencryptVersionCount `json:"versions"`
}

// ReencryptVersionCount is how many of a stream's messages were sealed
// under one data key version.
type ReencryptVersionCount struct {
	Version  uint32 `json:"version"`
	Messages uint64 `json:"messages"`
	// LastSeq is the last stream sequence sealed under the version.
	LastSeq uint64 `json:"lastSeq"`
	// AgedOut is true, in a status answer, once the stream holds no
	// message at or below LastSeq: none under this version remains.
	AgedOut bool `json:"agedOut,omitempty"`
}

// ReencryptKMS starts the tenant's re-encryption job (or returns the one
// running): records sealed under older data key versions are re-sealed
// under the newest. Poll KMSStatus for its progress. Audited. Needs
// keys:write.
func (c *Client) ReencryptKMS(ctx context.Context, tenant string) (*KMSReencryption, error) {
	return post[KMSReencryption](ctx, c, path("tenants", tenant, "kms", "reencrypt"), nil)
}
