// The answers of the registry that are not integrations: an integration
// with its delivery state, a test delivery's outcome, a dead letter.

package forward

import "github.com/iotransit/iotransit/client"

// View is an integration with its delivery state.
type View struct {
	Integration
	State       State  `json:"state"`
	Backlog     uint64 `json:"backlog"`
	DeadLetters uint64 `json:"deadLetters"`
}

// TestResult is the outcome of a test delivery.
type TestResult = client.TestResult

// DeadLetter is a message an integration gave up on.
type DeadLetter = client.DeadLetter
