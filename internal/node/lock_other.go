//go:build !unix

package node

// lockDataDir does nothing where flock is missing.
func lockDataDir(string) (func(), error) { return func() {}, nil }
