// A worker: one integration's delivery session, its batches, retries and
// dead letters, and its delivery state.

package forward

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/retry"
	"github.com/iotransit/iotransit/internal/store"
)

// worker delivers one integration. With one lane, one batch is in flight
// at a time, so messages reach the endpoint in stream order; with several
// (lanes.go), each device's messages take one lane, which keeps every
// device's order.
type worker struct {
	e      *Engine
	tenant string
	id     string
	rev    uint64
	cancel context.CancelFunc
	done   chan struct{}
	// poke ends the backoff wait of the failing batch (retry now); pokes
	// does it for every lane of a session delivering several at once.
	poke  chan struct{}
	pokes []chan struct{}

	flushMu sync.Mutex // held while the state is stored
	mu      sync.Mutex
	state   State
	dirty   bool // state changed since it was last stored
	// How far the last session got: leased (held the lease) and loaded
	// (state holds the stored state). A session that failed earlier must
	// not store its empty state over the stored one.
	leased, loaded bool
}

// run holds the lease and delivers until ctx ends, starting over after a
// failure of the session (lost lease, bad configuration, JetStream trouble).
func (w *worker) run(ctx context.Context) {
	retry.Forever(ctx, restarts, w.session, func(err error, _ time.Duration) {
		if err != nil {
			w.e.log.Warn("integration session ended", "tenant_id", w.tenant, "integration_id", w.id, "error", err)
			w.noteError(ctx, Summary(err), err)
		}
	})
}

func (w *worker) session(ctx context.Context) error {
	w.mu.Lock()
	w.leased, w.loaded = false, false
	w.mu.Unlock()
	lctx, release, err := w.e.lease(ctx, w.tenant, w.id)
	if err != nil {
		return err
	}
	defer release()
	w.mu.Lock()
	w.leased = true
	w.mu.Unlock()
	r, _, err := w.e.load(lctx, w.tenant, w.id)
	if err != nil {
		return err
	}
	sec, err := w.e.secrets(lctx, r)
	if err != nil {
		return err
	}
	sealer, err := w.e.cfg.sealer(r.Integration)
	if err != nil {
		return err
	}
	target, err := w.e.factories[r.Type].New(lctx, r.Integration, sec, w.e.cfg.Policy, sealer)
	if err != nil {
		return &DeliveryError{Summary: "configuration refused", Err: err}
	}
	defer target.Close()
	st, err := w.e.loadState(lctx, w.tenant, w.id)
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.state, w.dirty, w.loaded = st, false, true
	w.mu.Unlock()
	cons, inProcess, err := w.e.ensureStreams(lctx, r.Integration, w.state)
	if err != nil {
		return err
	}
	defer w.flush(lctx)
	w.mu.Lock()
	w.state.Node = w.e.cfg.NodeID
	w.mu.Unlock()
	if n := lanesOf(r.Integration); n > 1 {
		return w.lanes(lctx, cons, r.Integration, inProcess, target, n)
	}
	w.mu.Lock()
	if w.state.retireLanes(1) {
		w.state.Lanes = nil // left by a session with several lanes
	}
	former := slices.Clone(w.state.FormerLanes)
	w.mu.Unlock()
	// i < 0: its pending batch is State.Pending (lane.pending); the zero
	// index would be State.Lanes[0], which a one-lane session has not.
	one := &lane{w: w, i: -1, poke: w.poke, putBack: nak}
	for lctx.Err() == nil {
		if err := w.batch(lctx, cons, r.Integration, inProcess, target, one, former); err != nil {
			return err
		}
	}
	return nil
}

// held is a fetched message with its decoded form.
type held struct {
	msg jetstream.Msg
	md  *jetstream.MsgMetadata
	m   Message
}

// batch fetches up to MaxMessages (waiting at most MaxWait) and delivers
// them, retrying until delivered or dead-lettered.
func (w *worker) batch(ctx context.Context, cons jetstream.Consumer, in Integration, inProcess bool, target Target, l *lane, former formerLanes) error {
	// The fetch waits well within AckWait: nothing marks fetched messages
	// in progress until the batch is complete, and JetStream would
	// redeliver them into the same batch. The wait is the server's, and the
	// fetch is seen to its end: a fetch abandoned early (a client-side
	// deadline, or a session that stops) leaves its pull request open on
	// the server, and messages stored meanwhile go to nobody until AckWait.
	// A session that ended meanwhile delivers nothing it fetched (below).
	fb, err := cons.Fetch(in.Batch.MaxMessages, jetstream.FetchMaxWait(min(time.Duration(in.Batch.MaxWait), w.e.cfg.AckWait/2)))
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	var msgs []held
	seen := map[uint64]bool{}
	rd := newRedrives(w.tenant, w.id)
	for jm := range fb.Messages() {
		md, err := jm.Metadata()
		if err != nil {
			return err
		}
		if seen[md.Sequence.Stream] {
			continue // a redelivery of a message already in this batch
		}
		seen[md.Sequence.Stream] = true
		if rd.foreign(jm) {
			if err := jm.Ack(); err != nil {
				return err
			}
			continue
		}
		sm, err := w.e.msgs.Decode(ctx, w.tenant, md.Sequence.Stream, md.Timestamp, jm.Headers(), jm.Data())
		if errors.Is(err, store.ErrUnreadable) { // it can never be delivered
			w.e.log.Error("undecodable message dead-lettered", "tenant_id", w.tenant, "integration_id", w.id, "seq", md.Sequence.Stream, "error", err)
			// The delivery position moves past it only if no earlier
			// message of this batch is still to be delivered.
			if derr := w.deadLetter(ctx, l, []held{{msg: jm, md: md}}, "message cannot be decoded", 0, len(msgs) == 0); derr != nil {
				return derr
			}
			continue
		}
		if err != nil { // the key store is unavailable: the session starts over
			return err
		}
		// A re-driven message was chosen for this integration by name:
		// the filter (which may have changed since) does not apply.
		// A message that a former lane delivered (before the number of
		// lanes changed) is not delivered again.
		if (inProcess && sm.RedrivenAt.IsZero() && !in.Filter.Matches(sm.Gateway, sm.Tuid, sm.TsmID)) || former.delivered(sm.Tuid, md.Sequence.Stream) {
			if err := jm.Ack(); err != nil {
				return err
			}
			continue
		}
		msgs = append(msgs, held{msg: jm, md: md, m: Message{
			Seq: sm.Seq, ID: sm.ID, Gateway: sm.Gateway, Tuid: sm.Tuid, TsmID: sm.TsmID, ReceivedAt: sm.ReceivedAt, RedrivenAt: sm.RedrivenAt, Body: sm.Message,
		}})
	}
	if ctx.Err() != nil {
		return nil // stopping: what was fetched is redelivered to the next holder
	}
	if err := fb.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if len(msgs) == 0 {
		w.flush(ctx)
		return nil
	}
	return w.deliver(ctx, l, in, target, msgs)
}

// finishGrace is how long a delivery under way may go on once its session
// is stopping (a change of the integration, a pause, the node shutting
// down): a batch the receiver is taking is seen to its answer rather than
// cut off and sent again by the next session.
const finishGrace = 2 * time.Second

// attempt makes one delivery attempt of b, within DeliveryTimeout. A
// session that stops meanwhile does not cut it off at once: it has
// finishGrace to finish.
func (w *worker) attempt(ctx context.Context, target Target, b *Batch) error {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.e.cfg.DeliveryTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(finishGrace, cancel)
		context.AfterFunc(dctx, func() { t.Stop() })
	})
	defer stop()
	return target.Deliver(dctx, b)
}

func newBatchID() string {
	b := make([]byte, 12)
	_, _ = crand.Read(b)
	return "msg_" + hex.EncodeToString(b)
}

// deliver hands a batch to the target until it is accepted, or dead-letters
// it once its oldest message is older than the integration's max age and
// delivery still fails. While it retries, the messages are kept from being
// redelivered (in progress).
func (w *worker) deliver(ctx context.Context, l *lane, in Integration, target Target, msgs []held) error {
	if ctx.Err() != nil {
		return nil // the lease is gone: the next holder delivers these
	}
	first, last := msgs[0].m.Seq, msgs[len(msgs)-1].m.Seq
	b := &Batch{Tenant: w.tenant, Integration: w.id}
	w.mu.Lock()
	var p *Pending
	if sp := l.pending(&w.state); sp != nil {
		c := *sp // the stored record is never changed in place
		p = &c
	}
	w.mu.Unlock()
	if p != nil && p.FirstSeq == first && last >= p.LastSeq {
		// The batch interrupted by a restart, redelivered: same id.
		for i, h := range msgs {
			if h.m.Seq > p.LastSeq {
				l.putBack(msgs[i:]) // for the next batch, at once
				msgs = msgs[:i]
				break
			}
		}
		b.ID = p.ID
	} else {
		b.ID = newBatchID()
		p = &Pending{ID: b.ID, FirstSeq: first, LastSeq: last, StartedAt: time.Now().UTC()}
	}
	b.Messages = make([]Message, len(msgs))
	oldest := msgs[0].m.ageFrom()
	for i, h := range msgs {
		b.Messages[i] = h.m
		if a := h.m.ageFrom(); a.Before(oldest) {
			oldest = a
		}
	}
	p.LastSeq = b.Messages[len(b.Messages)-1].Seq
	w.update(ctx, func(s *State) { l.setPending(s, p) })

	if !l.kept { // a lane's messages are kept alive by its session
		stop := w.keepAlive(ctx, msgs)
		defer stop()
	}
	select { // a retry-now asked before this batch is not for it
	case <-l.poke:
	default:
	}
	for ctx.Err() == nil {
		p.Attempts++
		b.Attempt = p.Attempts
		start := time.Now()
		err := w.attempt(ctx, target, b)
		if err != nil && ctx.Err() != nil {
			return nil // stopping: the messages are redelivered to whoever runs next
		}
		now := time.Now().UTC()
		if err == nil {
			// Delivered, even if the session is stopping meanwhile: it is
			// recorded (and the stopping session stores the state), so
			// the next session does not send the batch again. A stopping
			// session acknowledges it within finishGrace and waits for the
			// server's confirmation, lanes too: no later batch of the
			// session would see an asynchronous one through.
			if ctx.Err() == nil {
				if err := l.ack(ctx, msgs); err != nil && ctx.Err() == nil {
					return err
				}
			} else {
				actx, acancel := context.WithTimeout(context.WithoutCancel(ctx), finishGrace)
				l.ackEnding(actx, msgs)
				acancel()
			}
			w.e.m.attempts.WithLabelValues(in.Type, "ok").Inc()
			w.e.m.messages.WithLabelValues(in.Type, "delivered").Add(float64(len(msgs)))
			for _, m := range b.Messages {
				w.e.m.latency.Observe(now.Sub(m.ReceivedAt).Seconds())
			}
			// Stored with the next batch's pending record, or when idle: one
			// KV write per batch. A crash before that resends this batch,
			// under its id (at least once).
			w.updateLazy(func(s *State) {
				s.Delivered += uint64(len(msgs))
				s.Batches++
				l.done(s, msgs)
				s.LastSuccessAt, s.LastAttemptAt = &now, &now
				l.setPending(s, nil)
				if !l.resolve() { // another lane still fails
					return
				}
				s.ConsecutiveFailures = 0
				s.NextRetryAt = nil
				if s.LastError != "" && s.LastErrorResolvedAt == nil {
					s.LastErrorResolvedAt = &now
				}
			})
			w.e.log.Debug("batch delivered", "tenant_id", w.tenant, "integration_id", w.id, "batch_id", b.ID, "messages", len(msgs), "took", time.Since(start).String())
			return nil
		}
		w.e.m.attempts.WithLabelValues(in.Type, "failed").Inc()
		summary := Summary(err)
		if now.Sub(oldest) > time.Duration(in.MaxAge) {
			return w.deadLetter(ctx, l, msgs, summary, p.Attempts, true)
		}
		wait := w.backoff(p.Attempts, RetryAfter(err))
		next := now.Add(wait)
		w.update(ctx, func(s *State) {
			l.fail()
			s.Failed++
			s.ConsecutiveFailures++
			s.LastError, s.LastErrorAt, s.LastAttemptAt, s.NextRetryAt = summary, &now, &now, &next
			s.LastErrorResolvedAt = nil
			l.setPending(s, p)
		})
		w.e.log.Info("delivery failed; retrying", "tenant_id", w.tenant, "integration_id", w.id, "batch_id", b.ID, "attempt", p.Attempts, "error", err, "retry_in", wait.String())
		// Never wait past the point where the batch is due for the dead-letter
		// stream: the next attempt decides.
		if due := time.Until(oldest.Add(time.Duration(in.MaxAge))); due > 0 && due < wait {
			wait = due + 10*time.Millisecond
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		case <-l.poke:
			w.e.log.Info("retry now", "tenant_id", w.tenant, "integration_id", w.id, "batch_id", b.ID)
		}
	}
	return nil
}

// backoff is exponential with full jitter between RetryBase and RetryMax,
// and at least what the endpoint asked for (capped at an hour).
func (w *worker) backoff(attempt int, asked time.Duration) time.Duration {
	d := retry.Backoff{Base: w.e.cfg.RetryBase, Max: w.e.cfg.RetryMax}.Delay(attempt)
	if asked > d {
		d = min(asked, time.Hour)
	}
	return d
}

// keepAlive tells JetStream the held messages are in progress, so they are
// not redelivered while the batch is retried; it stops when the batch ends.
func (w *worker) keepAlive(ctx context.Context, msgs []held) func() {
	kctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(w.e.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-kctx.Done():
				return
			case <-t.C:
				for _, h := range msgs {
					_ = h.msg.InProgress()
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}

// ack acknowledges every message and waits for the server to confirm the
// last one.
func ack(ctx context.Context, msgs []held) error {
	for _, h := range msgs[:len(msgs)-1] {
		if err := h.msg.Ack(); err != nil {
			return err
		}
	}
	return msgs[len(msgs)-1].msg.DoubleAck(ctx)
}

// deadLetter moves messages to the integration's dead-letter stream (as
// stored: sealed, with their headers and why), then acknowledges them;
// advance moves the delivery position past them and ends the lane's
// pending batch (neither while earlier messages are still held: they are
// the batch being gathered, which may be one a restart interrupted and
// must keep its id).
func (w *worker) deadLetter(ctx context.Context, l *lane, msgs []held, reason string, attempts int, advance bool) error {
	subject := names.DeadLetter(w.tenant, w.id)
	now := time.Now().UTC()
	for _, h := range msgs {
		m := nats.NewMsg(subject)
		m.Data = h.msg.Data()
		for k, v := range h.msg.Headers() {
			if k != jetstream.MsgIDHeader {
				m.Header[k] = v
			}
		}
		seq := strconv.FormatUint(h.md.Sequence.Stream, 10)
		m.Header.Set("Iot-Content-Id", contentID(h.msg.Headers()))
		m.Header.Set(jetstream.MsgIDHeader, "dlq-"+seq)
		m.Header.Set(hdrOrigSeq, seq)
		m.Header.Set(hdrDeadReason, reason)
		m.Header.Set(hdrDeadAttempts, strconv.Itoa(attempts))
		m.Header.Set(hdrDeadAt, now.Format(time.RFC3339Nano))
		if _, err := w.e.js.PublishMsg(ctx, m, jetstream.WithExpectStream(names.DeadLetterStream(w.tenant, w.id))); err != nil {
			return err
		}
	}
	if err := ack(ctx, msgs); err != nil {
		return err
	}
	w.e.m.messages.WithLabelValues("", "dead_lettered").Add(float64(len(msgs)))
	w.update(ctx, func(s *State) {
		s.DeadLettered += uint64(len(msgs))
		if advance {
			l.done(s, msgs)
		}
		s.Failed++
		s.ConsecutiveFailures++
		s.LastError, s.LastErrorAt, s.LastAttemptAt = reason, &now, &now
		if l.resolve() { // the lane goes on with its next batch
			s.NextRetryAt = nil
		}
		if advance {
			l.setPending(s, nil)
		}
		s.LastErrorResolvedAt = nil
	})
	w.e.log.Warn("messages dead-lettered", "tenant_id", w.tenant, "integration_id", w.id, "messages", len(msgs), "reason", reason)
	return nil
}

// update changes the state and stores it (best effort: a failed write is
// logged; the next one carries the state).
func (w *worker) update(ctx context.Context, fn func(*State)) {
	w.mu.Lock()
	fn(&w.state)
	w.dirty = true
	w.mu.Unlock()
	w.flush(ctx)
}

// updateLazy changes the state; it is stored by the next update or flush.
func (w *worker) updateLazy(fn func(*State)) {
	w.mu.Lock()
	fn(&w.state)
	w.dirty = true
	w.mu.Unlock()
}

// flush stores the state if it changed. Flushes take turns, so an older
// state is never stored over a newer one; a flush that waited finds its
// change stored by the one before it, or stores it.
func (w *worker) flush(ctx context.Context) {
	w.flushMu.Lock()
	defer w.flushMu.Unlock()
	w.mu.Lock()
	if !w.dirty {
		w.mu.Unlock()
		return
	}
	s := w.state
	s.Lanes = slices.Clone(s.Lanes) // lanes change theirs meanwhile
	w.dirty = false
	w.mu.Unlock()
	if err := w.e.saveState(context.WithoutCancel(ctx), w.tenant, w.id, s); err != nil {
		w.e.log.Warn("save integration state", "tenant_id", w.tenant, "integration_id", w.id, "error", err)
		w.mu.Lock()
		w.dirty = true
		w.mu.Unlock()
	}
}

// noteError records a session failure in the state. A session that never
// held the lease records nothing (another node may be delivering); one that
// failed before it loaded the state changes only the error of the stored
// state, never its counters or delivery position.
func (w *worker) noteError(ctx context.Context, summary string, err error) {
	now := time.Now().UTC()
	w.mu.Lock()
	leased, loaded := w.leased, w.loaded
	w.mu.Unlock()
	switch {
	case loaded:
		w.update(ctx, func(s *State) {
			s.LastError, s.LastErrorAt, s.LastErrorResolvedAt = summary, &now, nil
		})
	case leased:
		s, lerr := w.e.loadState(ctx, w.tenant, w.id)
		if lerr != nil {
			return
		}
		s.LastError, s.LastErrorAt, s.LastErrorResolvedAt = summary, &now, nil
		if serr := w.e.saveState(ctx, w.tenant, w.id, s); serr != nil {
			w.e.log.Warn("save integration state", "tenant_id", w.tenant, "integration_id", w.id, "error", serr)
		}
	}
}
