package testutil

import (
	"net/http"
	"sync/atomic"
)

// Down makes the receiver answer status, with a Retry-After header when
// retryAfter is not empty, while the flag it returns stays set (it starts
// set); once cleared, the receiver accepts again.
func (r *Receiver) Down(status int, retryAfter string) *atomic.Bool {
	var down atomic.Bool
	down.Store(true)
	r.Handle(func(w http.ResponseWriter, _ *http.Request, _ []byte) bool {
		if !down.Load() {
			return false
		}
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.WriteHeader(status)
		return true
	})
	return &down
}
