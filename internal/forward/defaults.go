package forward

// DefaultConfig returns the configuration that a zero Config means, but
// for NodeID, which is left empty: New draws a random one for each engine
// (the node passes its stable id instead). Policy and ParseKey have no
// default.
func DefaultConfig() Config {
	var c Config
	c.defaults()
	c.NodeID = ""
	return c
}
