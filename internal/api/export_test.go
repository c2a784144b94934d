package api

import "time"

// SetReadAuditWindow sets the window of read audit entries of the servers
// started after it (readAuditWindow) until restore is called.
func SetReadAuditWindow(d time.Duration) (restore func()) {
	old := readAuditWindow
	readAuditWindow = d
	return func() { readAuditWindow = old }
}
