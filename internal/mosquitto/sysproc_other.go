//go:build !linux

package mosquitto

import "syscall"

// sysProcAttr is the default elsewhere: Close stops the broker.
func sysProcAttr() *syscall.SysProcAttr { return nil }
