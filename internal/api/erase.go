package api

import (
	"context"
	"net/http"
	"strconv"
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

// ErrTuidInvalid is a path naming a sensor by something that is not a TUID.
var ErrTuidInvalid = fault.Define("api.tsm_tuid_invalid", fault.InvalidArgument, "the tsmTuid in the path is not a sensor TUID")

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
