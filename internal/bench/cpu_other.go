//go:build !linux

package bench

// readCPU is not implemented here: CPU usage is left out of results.
func readCPU(pid int) cpuSnapshot { return cpuSnapshot{} }
