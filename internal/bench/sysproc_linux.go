package bench

import "syscall"

// peerSysProcAttr makes the kernel kill a peer process if the bench dies
// without stopping it.
func peerSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
