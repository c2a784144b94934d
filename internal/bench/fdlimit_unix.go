//go:build unix

package bench

import "syscall"

// openFileLimit is how many files this process may open (the hard limit:
// Go raises the soft one to it at start), 0 when unknown.
func openFileLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	return l.Max
}
