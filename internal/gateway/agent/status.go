package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/iotransit/iotransit/internal/gateway"
	"github.com/iotransit/iotransit/internal/gwproto"
)

// maxRenewalText bounds the renewal failure in a status.
const maxRenewalText = 512

// Status returns the gateway's status as sent on the status topic.
func (a *Agent) Status() gwproto.Status {
	qs := a.q.Stats()
	ms := a.rcv.Stats()
	fw, slot := a.cfg.Firmware.Installed()
	a.mu.Lock()
	renewal := a.renewErr
	a.mu.Unlock()
	if len(renewal) > maxRenewalText {
		renewal = renewal[:maxRenewalText]
	}
	return gwproto.Status{
		AgentVersion: Version, FirmwareVersion: fw, Slot: slot,
		QueueDepth: int(qs.Depth), QueueDropped: qs.Dropped + qs.Refused,
		Mesh:           gwproto.MeshCounters{Accepted: ms.Accepted, Dropped: ms.Dropped},
		KeyDeliveryKey: a.DeliveryKey(), Renewal: renewal,
		Time: time.Now().UTC(),
	}
}

// sameStatus reports whether two statuses differ only in their time.
func sameStatus(x, y gwproto.Status) bool {
	x.Time, y.Time = time.Time{}, time.Time{}
	bx, _ := json.Marshal(x)
	by, _ := json.Marshal(y)
	return string(bx) == string(by)
}

// statusLoop sends the status on connect, then again when it changed, at
// most once per Config.StatusInterval (a change asked for by markChanged,
// such as new keys or a failed renewal, goes out at the next tick).
func (a *Agent) statusLoop(ctx context.Context, u *gateway.Uplink) {
	var last gwproto.Status
	send := func() {
		st := a.Status()
		b, err := json.Marshal(st)
		if err != nil {
			return
		}
		r, err := u.PublishTo(ctx, gwproto.StatusTopic(a.cfg.Serial), b, 1)
		switch {
		case err != nil:
			a.log.Warn("status not sent", "err", err)
		case r.ReasonCode >= 0x80:
			a.log.Warn("status refused", "code", fmt.Sprintf("0x%02x", r.ReasonCode), "reason", r.Reason)
		}
		last = st
	}
	send()
	t := time.NewTicker(a.cfg.StatusInterval)
	defer t.Stop()
	pending := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.changed:
			pending = true
		case <-t.C:
			if pending || !sameStatus(last, a.Status()) {
				pending = false
				send()
			}
		}
	}
}
