//go:build !unix

package queue

import "os"

// unlockFile does nothing where bbolt locks otherwise.
func unlockFile(*os.File) {}
