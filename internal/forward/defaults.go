package forward

import "time"

// DefaultConfig returns the configuration that a zero Config means, but
// for NodeID, which is left empty: New draws a random one for each engine
// (the node passes its stable id instead), and DeadLetterRetention, 30
// days (a zero Config keeps dead letters for ever). Policy and ParseKey
// have no default.
func DefaultConfig() Config {
	var c Config
	c.defaults()
	c.NodeID = ""
	c.DeadLetterRetention = 30 * 24 * time.Hour
	return c
}
