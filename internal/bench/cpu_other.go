//go:build !linux

package bench

// readCPU is not implemented here: CPU usage is left out of results.
func readCPU(pid int) cpuSnapshot { return cpuSnapshot{} }

// readRSS is not implemented here: the server's memory is left out.
func readRSS(pid int) int64 { return 0 }
