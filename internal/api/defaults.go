package api

import "time"

// DefaultConfig returns the configuration that a zero Config means: every
// field at its default, rate limits included, and no operator key.
func DefaultConfig() Config {
	var c Config
	c.defaults()
	return c
}

func (c *Config) defaults() {
	if c.Addr == "" {
		c.Addr = ":8443"
	}
	if c.MaxBody == 0 {
		c.MaxBody = 64 << 10
	}
	if c.CertValidity == 0 {
		c.CertValidity = 365 * 24 * time.Hour
	}
	if c.MaxStreamsPerCredential == 0 {
		c.MaxStreamsPerCredential = 8
	}
	if c.MaxStreamsPerTenant == 0 {
		c.MaxStreamsPerTenant = 64
	}
	if c.StreamRecheck == 0 {
		c.StreamRecheck = 10 * time.Second
	}
	c.Limits.defaults()
}
