//go:build !unix

package nodetest

import "os"

// quitSignal ends the process where SIGQUIT does not exist.
var quitSignal = os.Kill
