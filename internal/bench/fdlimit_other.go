//go:build !unix

package bench

func openFileLimit() uint64 { return 0 }
