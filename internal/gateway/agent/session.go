package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/iotransit/iotransit/internal/gateway"
	"github.com/iotransit/iotransit/internal/gateway/queue"
	"github.com/iotransit/iotransit/internal/gwproto"
	"github.com/iotransit/iotransit/internal/retry"
)

// sessionLoop keeps an MQTT session up, reconnecting with exponential
// backoff and jitter.
func (a *Agent) sessionLoop(ctx context.Context) {
	acks := make(chan uint64, 1)
	done := make(chan struct{})
	go func() { defer close(done); a.ackLoop(ctx, acks) }()
	retry.Forever(ctx, a.cfg.Reconnect, func(ctx context.Context) error { return a.session(ctx, acks) },
		func(err error, wait time.Duration) {
			a.log.Warn("MQTT session ended; reconnecting", "err", err, "retry_in", wait.Round(time.Millisecond))
		})
	<-done
}

// session connects, sends the status, and uploads until the connection
// or ctx ends.
func (a *Agent) session(ctx context.Context, acks chan uint64) error {
	s := a.cfg.Serial
	cfg := gateway.UplinkConfig{
		Addr: a.cfg.MQTTAddr, Serial: s, TLS: a.tlsConfig(a.cfg.ServerName),
		OnMessage: func(topic string, payload []byte) { a.onDown(ctx, topic, payload) },
		Subscribe: []string{gwproto.ErrorsTopic(s), gwproto.KeysTopic(s), gwproto.NodesTopic(s), gwproto.FirmwareTopic(s)},
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	u, err := gateway.Dial(dctx, cfg)
	cancel()
	if err != nil {
		return err
	}
	defer u.Close()
	a.connected.Store(true)
	defer a.connected.Store(false)
	a.log.Info("connected", "mqtt", a.cfg.MQTTAddr)
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-u.Done():
			stop()
		case <-sctx.Done():
		}
	}()
	statusDone := make(chan struct{})
	go func() { defer close(statusDone); a.statusLoop(sctx, u) }()
	err = a.upload(sctx, u, acks)
	stop()
	<-statusDone
	if ctx.Err() == nil && err == nil {
		err = errors.New("connection closed")
	}
	return err
}

// onDown handles a message on one of the down topics.
func (a *Agent) onDown(ctx context.Context, topic string, payload []byte) {
	s := a.cfg.Serial
	var err error
	switch topic {
	case gwproto.KeysTopic(s):
		err = a.HandleKeys(payload)
	case gwproto.NodesTopic(s):
		err = a.HandleNodes(payload)
	case gwproto.ErrorsTopic(s):
		var r gwproto.Report
		if err = json.Unmarshal(payload, &r); err == nil {
			a.rejected.Add(uint64(r.Total()))
			first := ""
			if len(r.Rejected) > 0 {
				first = r.Rejected[0].Code + ": " + r.Rejected[0].Reason
			}
			a.log.Warn("the cloud rejected messages", "rejected", r.Total(), "accepted", r.Accepted, "first", first)
		}
	case gwproto.FirmwareTopic(s):
		var n gwproto.FirmwareNotice
		if err = json.Unmarshal(payload, &n); err == nil {
			go func() {
				if err := a.cfg.Firmware.Notice(ctx, n); err != nil {
					a.log.Error("firmware notice", "rollout", n.RolloutID, "err", err)
				}
				a.markChanged()
			}()
		}
	default:
		err = fmt.Errorf("unexpected topic %q", topic)
	}
	if err != nil {
		a.log.Error("down message refused", "topic", topic, "err", err)
	}
}

// ackLoop acknowledges queue positions, the latest one waiting: a commit
// per PUBACK would cost an fsync per publish. At the end it writes the
// last one.
func (a *Agent) ackLoop(ctx context.Context, acks chan uint64) {
	ack := func(id uint64) {
		if err := a.q.Ack(id); err != nil {
			a.log.Error("queue ack", "id", id, "err", err)
		}
	}
	for {
		select {
		case id := <-acks:
			ack(id)
		case <-ctx.Done():
			select {
			case id := <-acks:
				ack(id)
			default:
			}
			return
		}
	}
}

// postAck hands id to ackLoop, replacing one that waits.
func postAck(acks chan uint64, id uint64) {
	select {
	case <-acks:
	default:
	}
	acks <- id
}

// permanent reports whether a PUBACK reason code refuses the payload for
// good (resending cannot help): the messages are counted and skipped.
// Other refusals (rate, quota, busy, not authorized) are retried.
func permanent(code byte) bool {
	switch code {
	case 0x99, 0x95, 0x90: // payload format invalid, packet too large, topic name invalid
		return true
	}
	return false
}

// refusalCalm is how long the upload sends one publish at a time after a
// temporary refusal.
const refusalCalm = 10 * time.Second

// flight is one publish waiting for its PUBACK (nil: a record skipped).
type flight struct {
	last uint64 // the queue id of its last message
	n    int
	p    *gateway.Pending
}

// upload sends the queue in order from its head, Config.Window publishes
// in flight, each a JSON array of up to Config.BatchMessages messages; a
// PUBACK moves the queue's head. A temporary refusal waits (backoff) and
// sends again from the first message not acknowledged; a lost connection
// ends the session, and the next one starts there too.
func (a *Agent) upload(ctx context.Context, u *gateway.Uplink, acks chan uint64) error {
	acked := a.q.Stats().OldestID - 1
	cursor := acked
	var inflight []flight
	refusals := 0
	// window is the publishes allowed in flight: one after a temporary
	// refusal and for refusalCalm after it (publishes in flight behind a
	// refused one may be taken before it is sent again, out of order; one
	// at a time cannot), then doubling with each publish taken up to
	// Config.Window.
	window := a.cfg.Window
	var calmUntil time.Time
	for {
		for len(inflight) < window {
			recs, err := a.q.Read(cursor, a.cfg.BatchMessages)
			var rerr *queue.RecordError
			if errors.As(err, &rerr) && len(recs) == 0 {
				// A record that does not open: counted, logged, skipped.
				a.recordErrors.Add(1)
				a.log.Error("queue record does not open; skipped", "err", rerr)
				inflight = append(inflight, flight{last: rerr.ID})
				cursor = rerr.ID
				continue
			}
			if err != nil && rerr == nil {
				return fmt.Errorf("agent: queue read: %w", err)
			}
			if len(recs) == 0 {
				break
			}
			payload, k := batch(recs, a.cfg.BatchBytes)
			p, err := u.Send(ctx, payload)
			if err != nil {
				return fmt.Errorf("agent: publish: %w", err)
			}
			f := flight{last: recs[k-1].ID, n: k, p: p}
			inflight = append(inflight, f)
			cursor = f.last
		}
		if len(inflight) == 0 {
			select {
			case <-a.q.Appends():
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		f := inflight[0]
		inflight = inflight[1:]
		var r gateway.PublishResult
		if f.p != nil {
			var err error
			if r, err = f.p.Wait(ctx); err != nil {
				return fmt.Errorf("agent: publish: %w", err)
			}
		}
		switch {
		case r.ReasonCode < 0x80:
			refusals = 0
			if time.Now().After(calmUntil) {
				window = min(2*window, a.cfg.Window)
			}
			a.published.Add(uint64(f.n))
		case permanent(r.ReasonCode):
			a.refused.Add(uint64(f.n))
			a.log.Error("the cloud refused messages for good; skipped", "messages", f.n, "code", fmt.Sprintf("0x%02x", r.ReasonCode), "reason", r.Reason)
		default:
			refusals++
			wait := a.cfg.Reconnect.Delay(refusals)
			a.log.Warn("the cloud refused messages for now; sending again", "messages", f.n, "code", fmt.Sprintf("0x%02x", r.ReasonCode), "reason", r.Reason, "retry_in", wait)
			inflight, cursor, window = nil, acked, 1 // the rest in flight is sent again (stored once: content ids)
			calmUntil = time.Now().Add(refusalCalm)
			if !retry.Sleep(ctx, wait) {
				return ctx.Err()
			}
			continue
		}
		acked = f.last
		postAck(acks, acked)
	}
}

// batch returns the JSON array of the first records that fit in max bytes
// (at least one), and how many it took. A record that is not JSON goes
// alone, so that its refusal costs no other message.
func batch(recs []queue.Record, max int) ([]byte, int) {
	if !json.Valid(recs[0].Data) {
		return recs[0].Data, 1
	}
	b := make([]byte, 0, min(max, 64<<10))
	b = append(b, '[')
	k := 0
	for _, r := range recs {
		if k > 0 && (len(b)+len(r.Data)+2 > max || !json.Valid(r.Data)) {
			break
		}
		if k > 0 {
			b = append(b, ',')
		}
		b = append(b, r.Data...)
		k++
	}
	return append(b, ']'), k
}
