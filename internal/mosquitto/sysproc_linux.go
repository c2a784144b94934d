package mosquitto

import "syscall"

// sysProcAttr runs the broker as user as (nil: this process's user) and
// makes the kernel kill it if its parent dies without stopping it (Go sets
// the parent-death signal after the change of user, which would clear it).
func sysProcAttr(as *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: as}
}
