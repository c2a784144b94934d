package mosquitto

import "syscall"

// sysProcAttr makes the kernel kill the broker if its parent dies without
// stopping it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
