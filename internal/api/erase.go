package api

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/store"
	"github.com/iotransit/iotransit/internal/thingsee"
)

// Erasure erases a sensor's stored data (store.Store).
type Erasure interface {
	EraseDevice(ctx context.Context, tenant, tuid string, opt store.EraseOptions) (store.Erasure, error)
}

// Faults of erasures.
var (
	// ErrTuidInvalid is a path naming a sensor by something that is not a TUID.
	ErrTuidInvalid = fault.Define("api.tsm_tuid_invalid", fault.InvalidArgument, "the tsmTuid in the path is not a sensor TUID")
	// ErrEraseBusy is an erasure refused while another of the tenant, or
	// maxErasures in all, run on the node.
	ErrEraseBusy = fault.Define("api.erase_busy", fault.ResourceExhausted, "an erasure of this tenant is running, or the node runs as many as it may; retry after the time in Retry-After")
)

// maxErasures is how many erasures a node runs at once: each reads whole
// streams for up to eraseBudget, so a credential's request rate alone
// would not bound the work it can start.
const maxErasures = 2

// eraseRetry is the Retry-After of a refused erasure.
const eraseRetry = 5 * time.Second

// erasures are the erasures running on this node (the zero value is
// ready): at most one per tenant, maxErasures in all.
type erasures struct {
	mu      sync.Mutex
	running map[string]bool
}

// start reserves a run for tenant; ok is false when it may not start.
// done ends the run (once; later calls do nothing).
func (e *erasures) start(tenant string) (done func(), ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.running[tenant] || len(e.running) >= maxErasures {
		return nil, false
	}
	if e.running == nil {
		e.running = map[string]bool{}
	}
	e.running[tenant] = true
	var once sync.Once
	return func() {
		once.Do(func() {
			e.mu.Lock()
			delete(e.running, tenant)
			e.mu.Unlock()
		})
	}, true
}

// eraseBudget is how long one erasure request works before it answers
// with what it did and a continuation (complete false, next): well within
// the server's write timeout (60 s) and a client's usual timeout. The
// client's EraseDevice calls again until the erasure is complete.
var eraseBudget = 20 * time.Second

// eraseDevice erases every stored record of a sensor of the tenant (its
// messages, re-driven copies, dead letters, rejected messages), audited as
// device.erase with the counts, also when it failed part way.
func (s *Server) eraseDevice(w http.ResponseWriter, r *http.Request, p *Principal) error {
	if s.deps.Erasure == nil {
		return ErrNotFound.New()
	}
	tenant, tuid := r.PathValue("tenant"), r.PathValue("tsmTuid")
	if !thingsee.ValidTUID(tuid) {
		return ErrTuidInvalid.WithDetail("tsmTuid must be 17 characters: 4 uppercase letters, 2 digits, then 11 of A-Z and 0-9")
	}
	next, err := stringParam(r, "next", 512)
	if err != nil {
		return err
	}
	done, ok := s.erasures.start(tenant)
	if !ok {
		retryAfter(w, eraseRetry)
		return ErrEraseBusy.New()
	}
	defer done()
	// The budget is real time, whatever clock the API's dates come from.
	res, err := s.deps.Erasure.EraseDevice(r.Context(), tenant, tuid, store.EraseOptions{Next: next, Deadline: time.Now().Add(eraseBudget)})
	s.record(r.Context(), r, tenant, p, "device.erase", "sensor:"+tuid, err, map[string]string{
		"messages": strconv.Itoa(res.Messages), "redriven": strconv.Itoa(res.Redriven),
		"deadLetters": strconv.Itoa(res.DeadLetters), "rejected": strconv.Itoa(res.Rejected),
		"overwritten": strconv.Itoa(res.Overwritten), "complete": strconv.FormatBool(res.Complete && err == nil),
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, client.DeviceErasure{
		Tuid: tuid, Messages: res.Messages, Redriven: res.Redriven, DeadLetters: res.DeadLetters,
		Rejected: res.Rejected, Overwritten: res.Overwritten, Complete: res.Complete, Next: res.Next,
	})
	return nil
}
