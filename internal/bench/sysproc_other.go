//go:build !linux

package bench

import "syscall"

// peerSysProcAttr is the default elsewhere: Close stops the peer.
func peerSysProcAttr() *syscall.SysProcAttr { return nil }
