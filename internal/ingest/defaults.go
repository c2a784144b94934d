package ingest

// DefaultConfig returns the configuration that a zero Config means: every
// field at its default, and no OnEvent.
func DefaultConfig() Config {
	var c Config
	c.defaults()
	return c
}
