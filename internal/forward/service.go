// The answers of the registry that are not integrations: an integration
// with its delivery state, a test delivery's outcome, a dead letter.

package forward

import "github.com/iotransit/iotransit/client"

// View is an integration with its delivery state.
type View struct {
	Integration
	// Health sums the state up (client.HealthOK, ...).
	Health      string `json:"health"`
	State       State  `json:"state"`
	Backlog     uint64 `json:"backlog"`
	DeadLetters uint64 `json:"deadLetters"`
}

// health sums a view's state up: paused, else failing (the last error is
// not resolved), else dead-letters (some wait), else ok.
func (v *View) health() string {
	s := &v.State
	if s.LastError != "" && s.LastErrorResolvedAt == nil && s.NextRetryAt == nil && s.LastSuccessAt != nil && s.LastErrorAt != nil && s.LastSuccessAt.After(*s.LastErrorAt) {
		// A state stored before lastErrorResolvedAt existed. (A batch
		// waiting to be retried, NextRetryAt, is a failure that lasts:
		// with lanes, others deliver meanwhile.)
		s.LastErrorResolvedAt = s.LastSuccessAt
	}
	switch {
	case v.Paused:
		return client.HealthPaused
	case s.LastError != "" && s.LastErrorResolvedAt == nil:
		return client.HealthFailing
	case v.DeadLetters > 0:
		return client.HealthDeadLetters
	}
	return client.HealthOK
}

// TestResult is the outcome of a test delivery.
type TestResult = client.TestResult

// DeadLetter is a message an integration gave up on.
type DeadLetter = client.DeadLetter
