//go:build unix

package nodetest

import "syscall"

// quitSignal makes a Go process print its goroutines and exit.
var quitSignal = syscall.SIGQUIT
