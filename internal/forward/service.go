// The answers of the registry that are not integrations: an integration
// with its delivery state, a test delivery's outcome, a dead letter.

package forward

import (
	"encoding/json"
	"time"
)

// View is an integration with its delivery state.
type View struct {
	Integration
	State       State  `json:"state"`
	Backlog     uint64 `json:"backlog"`
	DeadLetters uint64 `json:"deadLetters"`
}

// TestResult is the outcome of a test delivery.
type TestResult struct {
	OK        bool    `json:"ok"`
	LatencyMS float64 `json:"latencyMs"`
	Error     string  `json:"error,omitempty"`
	BatchID   string  `json:"batchId"`
}

// DeadLetter is a message an integration gave up on.
type DeadLetter struct {
	Seq         uint64          `json:"seq"`
	OriginalSeq uint64          `json:"originalSeq"`
	ID          string          `json:"id"`
	Gateway     string          `json:"gateway"`
	ReceivedAt  time.Time       `json:"receivedAt"`
	DeadAt      time.Time       `json:"deadAt"`
	Reason      string          `json:"reason"`
	Attempts    int             `json:"attempts"`
	Message     json.RawMessage `json:"message"`
}
