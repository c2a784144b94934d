//go:build !linux

package mosquitto

import "syscall"

// sysProcAttr runs the broker as user as (nil: this process's user);
// elsewhere only Close stops the broker.
func sysProcAttr(as *syscall.Credential) *syscall.SysProcAttr {
	if as == nil {
		return nil
	}
	return &syscall.SysProcAttr{Credential: as}
}
