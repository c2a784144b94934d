// Lanes: an integration delivering several batches at once inside its one
// durable consumer. Messages are pulled continuously, each device's
// messages go to one lane (by tsmTuid), and each lane delivers its batches
// in order, with its own pending batch, retries and dead letters. A floor
// (the highest sequence with every one up to it done) is the integration's
// delivery position.

package forward

import (
	"context"
	"errors"
	"hash/fnv"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/store"
)

// lane delivers the batches of some devices, one at a time. The one lane
// of an integration delivering one batch at a time keeps its pending batch
// in State.Pending (i < 0, no floor); lane i of several keeps it in
// State.Lanes[i].
type lane struct {
	w    *worker
	i    int
	poke chan struct{}
	// putBack returns messages a redelivered batch leaves out, for the
	// lane's next batch.
	putBack func([]held)
	// kept: the session keeps the lane's messages in progress.
	kept bool
	fl   *floor
	all  []*lane // every lane of the session, for health
	// failing: the lane's batch failed and has not been delivered since.
	failing atomic.Bool

	mu    sync.Mutex
	queue []held
	ready chan struct{} // signalled when queue gains messages
	// back counts the messages the last batch put back, started when the
	// last batch was cut (both its goroutine's).
	back    int
	started time.Time
	// confirm brings the server's confirmation of the acks of the lane's
	// last delivered batch (nil: none awaited; its goroutine's).
	confirm chan error
}

// nak hands messages back to JetStream for redelivery at once.
func nak(msgs []held) {
	for _, h := range msgs {
		_ = h.msg.Nak()
	}
}

func (l *lane) pending(s *State) *Pending {
	switch {
	case l.i >= 0 && l.i < len(s.Lanes):
		return s.Lanes[l.i].Pending
	case l.i < 0 && l.fl == nil:
		return s.Pending
	}
	return nil
}

// setPending records the lane's batch (a copy: the caller keeps changing
// its own).
func (l *lane) setPending(s *State, p *Pending) {
	if p != nil {
		c := *p
		p = &c
	}
	switch {
	case l.i >= 0 && l.i < len(s.Lanes):
		s.Lanes[l.i].Pending = p
	case l.i < 0 && l.fl == nil:
		s.Pending = p
	}
}

// done moves the delivery position past messages delivered or
// dead-lettered (with s locked).
func (l *lane) done(s *State, msgs []held) {
	last := msgs[len(msgs)-1].md.Sequence.Stream
	if l.fl == nil {
		s.AckedThrough = max(s.AckedThrough, last)
		return
	}
	if l.i >= 0 && l.i < len(s.Lanes) {
		s.Lanes[l.i].AckedThrough = max(s.Lanes[l.i].AckedThrough, last)
	}
	seqs := make([]uint64, len(msgs))
	for i, h := range msgs {
		seqs[i] = h.md.Sequence.Stream
	}
	s.AckedThrough = max(s.AckedThrough, l.fl.done(seqs...))
}

// fail marks the lane failing (with the state locked, as resolve: the
// state's error and the lanes' failing marks change together).
func (l *lane) fail() { l.failing.Store(true) }

// resolve marks the lane no longer failing and reports whether no lane
// fails: only then is the integration's failure over. The state is
// locked.
func (l *lane) resolve() bool {
	l.failing.Store(false)
	for _, o := range l.all {
		if o.failing.Load() {
			return false
		}
	}
	return true
}

// push queues messages at the lane's end.
func (l *lane) push(h held) {
	l.mu.Lock()
	l.queue = append(l.queue, h)
	l.mu.Unlock()
	select {
	case l.ready <- struct{}{}:
	default:
	}
}

// pushFront queues messages left out of a batch before the others.
func (l *lane) pushFront(msgs []held) {
	l.mu.Lock()
	l.queue = append(append([]held(nil), msgs...), l.queue...)
	l.mu.Unlock()
	select {
	case l.ready <- struct{}{}:
	default:
	}
}

// take waits for at least one message, then takes what is queued, up to
// n: adaptive batching, a batch holds what arrived while the previous one
// was delivered, with no wait when the lane is idle.
func (l *lane) take(ctx context.Context, n int) []held {
	for {
		l.mu.Lock()
		if len(l.queue) > 0 {
			k := min(n, len(l.queue))
			out := append([]held(nil), l.queue[:k]...)
			l.queue = l.queue[k:]
			l.mu.Unlock()
			return out
		}
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-l.ready:
		}
	}
}

// ack acknowledges a delivered batch. A lane of several does not wait
// for the server to confirm: the confirmation comes while the lane
// gathers its next batch, and settle checks it before that is delivered
// (a lost ack ends the session, which starts again from the delivery
// position; the state, not the consumer's ack floor, says what was
// delivered). The one lane of an integration delivering one batch at a
// time waits (ack).
func (l *lane) ack(ctx context.Context, msgs []held) error {
	if l.fl == nil {
		return ack(ctx, msgs)
	}
	if err := l.settle(); err != nil {
		return err
	}
	for _, h := range msgs[:len(msgs)-1] {
		if err := h.msg.Ack(); err != nil {
			return err
		}
	}
	last := msgs[len(msgs)-1].msg
	l.confirm = make(chan error, 1)
	go func(c chan<- error) { c <- last.DoubleAck(ctx) }(l.confirm)
	return nil
}

// ackEnding acknowledges a batch delivered while the lane's session ends
// and waits for the server to confirm, within ctx: no later batch of the
// session settles an asynchronous confirmation (lane.ack's, whose context
// ends with the session, before the acks may even be sent). A failure is
// not the session's (it ends anyway): the state says the batch was
// delivered, and the next session skips what JetStream redelivers.
func (l *lane) ackEnding(ctx context.Context, msgs []held) {
	_ = l.settle()
	_ = ack(ctx, msgs)
}

// settle waits for the confirmation of the acks of the lane's last
// delivered batch, if one is awaited, and returns its error.
func (l *lane) settle() error {
	if l.confirm == nil {
		return nil
	}
	err := <-l.confirm
	l.confirm = nil
	return err
}

// next waits for the lane's next batch and returns it (nil when ctx
// ends): what is queued, up to batch.maxMessages, with no wait when the
// lane is idle. A busy lane (its previous batch started less than pace
// ago: messages keep coming while it delivers) gathers until pace after
// that start, unless its batch is full: under load a lane starts at most
// one batch per pace, so batches grow with the rate instead of their
// number (each costs a state write, a request and an ack round trip),
// and the pacing adds at most pace to a message's wait. delivery.linger,
// when set, always waits that long for more instead.
func (l *lane) next(ctx context.Context, in Integration, pace time.Duration) []held {
	n := in.Batch.MaxMessages
	msgs := l.take(ctx, n)
	if msgs == nil {
		return nil
	}
	msgs = l.complete(ctx, msgs, n)
	now := time.Now()
	if linger := time.Duration(in.Delivery.Linger); linger > 0 {
		msgs = l.more(ctx, msgs, n, now.Add(linger), 0)
	} else if due := l.started.Add(pace); len(msgs) < n && now.Before(due) {
		msgs = l.more(ctx, msgs, n, due, 0)
	}
	l.started = time.Now()
	return msgs
}

// Pacing of a busy lane: paceStep per lane of the integration (the lanes
// together start at most one batch per paceStep), at most maxPace and
// never more than the integration's batch.maxWait.
const (
	paceStep = 2 * time.Millisecond
	maxPace  = 20 * time.Millisecond
)

// lanePace returns how often at most a busy lane of an integration with n
// lanes starts a batch.
func lanePace(in Integration, n int) time.Duration {
	return min(time.Duration(n)*paceStep, maxPace, time.Duration(in.Batch.MaxWait))
}

// complete waits, a little, for the rest of the lane's batch interrupted
// by a restart when msgs starts it but does not reach its end: redelivered
// whole, it keeps its id.
func (l *lane) complete(ctx context.Context, msgs []held, n int) []held {
	l.w.mu.Lock()
	p := l.pending(&l.w.state)
	l.w.mu.Unlock()
	if p == nil || msgs[0].m.Seq != p.FirstSeq {
		return msgs
	}
	return l.more(ctx, msgs, n, time.Now().Add(redeliveryWait), p.LastSeq)
}

// more adds queued messages to msgs, waiting for them until deadline,
// until it holds n, or (upTo > 0) reaches sequence upTo.
func (l *lane) more(ctx context.Context, msgs []held, n int, deadline time.Time, upTo uint64) []held {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for len(msgs) < n && (upTo == 0 || msgs[len(msgs)-1].m.Seq < upTo) {
		l.mu.Lock()
		k := min(n-len(msgs), len(l.queue))
		msgs = append(msgs, l.queue[:k]...)
		l.queue = l.queue[k:]
		l.mu.Unlock()
		if k > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return msgs
		case <-t.C:
			return msgs
		case <-l.ready:
		}
	}
	return msgs
}

// redeliveryWait bounds how long a lane waits for the rest of its
// interrupted batch (messages the filter now drops never come).
const redeliveryWait = 2 * time.Second

// laneOf returns the lane of a device: one device always takes the same
// lane, for a given number of lanes.
func laneOf(tuid string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(tuid))
	return int(h.Sum32() % uint32(n))
}

// floor tracks the delivery position of messages done out of order: the
// highest sequence such that every message received up to it is done.
type floor struct {
	mu    sync.Mutex
	at    uint64
	order []uint64 // received and not yet below the floor, in order
	fin   map[uint64]bool
}

func newFloor(at uint64) *floor { return &floor{at: at, fin: map[uint64]bool{}} }

// add records a received message (in stream order).
func (f *floor) add(seq uint64) {
	f.mu.Lock()
	f.order = append(f.order, seq)
	f.mu.Unlock()
}

// done marks messages done and returns the floor.
func (f *floor) done(seqs ...uint64) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range seqs {
		f.fin[s] = true
	}
	for len(f.order) > 0 && f.fin[f.order[0]] {
		f.at = max(f.at, f.order[0])
		delete(f.fin, f.order[0])
		f.order = f.order[1:]
	}
	return f.at
}

// pullSize is how many messages an integration with n lanes has pulled
// and not yet acknowledged at most (the consumer's MaxAckPending).
func pullSize(in Integration, n int) int {
	if n <= 1 {
		return in.Batch.MaxMessages
	}
	return n * in.Batch.MaxMessages * 2
}

// lanes delivers an integration through n lanes until ctx ends or a lane
// fails in a way only a new session mends.
func (w *worker) lanes(ctx context.Context, cons jetstream.Consumer, in Integration, inProcess bool, target Target, n int) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w.mu.Lock()
	if w.state.retireLanes(n) { // other lanes (or one) before: their records become former ones
		w.state.Lanes = make([]LaneState, n)
	}
	w.state.Pending = nil
	acked := make([]uint64, n)
	for i, ls := range w.state.Lanes {
		acked[i] = ls.AckedThrough
	}
	former := slices.Clone(w.state.FormerLanes)
	skip := func(tuid string, i int, seq uint64) bool {
		return seq <= acked[i] || former.delivered(tuid, seq)
	}
	fl := newFloor(w.state.AckedThrough)
	w.mu.Unlock()

	var (
		heldMu sync.Mutex
		inHand = map[uint64]jetstream.Msg{} // pulled, not yet acknowledged
	)
	release := func(msgs []held) {
		heldMu.Lock()
		for _, h := range msgs {
			delete(inHand, h.md.Sequence.Stream)
		}
		heldMu.Unlock()
	}
	ls := make([]*lane, n)
	pokes := make([]chan struct{}, n)
	for i := range ls {
		ls[i] = &lane{w: w, i: i, poke: make(chan struct{}, 1), kept: true, fl: fl, ready: make(chan struct{}, 1)}
		l := ls[i]
		l.putBack = func(rest []held) { l.back = len(rest); l.pushFront(rest) }
		pokes[i] = ls[i].poke
	}
	for _, l := range ls {
		l.all = ls
	}
	w.mu.Lock()
	w.pokes = pokes
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.pokes = nil
		w.mu.Unlock()
	}()
	// The dispatcher's own dead letters (undecodable messages) belong to no lane.
	disp := &lane{w: w, i: -1, fl: fl, all: ls, putBack: nak}

	it, err := cons.Messages(jetstream.PullMaxMessages(pullSize(in, n)))
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer it.Stop()
	wg.Add(1)
	go func() { // keeps pulled messages in progress and stores the state when it changed
		defer wg.Done()
		keep := time.NewTicker(w.e.cfg.AckWait / 3)
		defer keep.Stop()
		save := time.NewTicker(250 * time.Millisecond)
		defer save.Stop()
		for {
			select {
			case <-ctx.Done():
				it.Stop() // ends the dispatcher's Next
				return
			case <-keep.C:
				heldMu.Lock()
				msgs := make([]jetstream.Msg, 0, len(inHand))
				for _, m := range inHand {
					msgs = append(msgs, m)
				}
				heldMu.Unlock()
				for _, m := range msgs {
					_ = m.InProgress()
				}
			case <-save.C:
				w.flush(ctx)
			}
		}
	}()
	pace, rd := lanePace(in, n), newRedrives(w.tenant, w.id)
	for _, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				msgs := l.next(ctx, in, pace)
				if msgs == nil {
					return
				}
				if err := l.settle(); err != nil {
					cancel(err)
					return
				}
				l.back = 0
				if err := w.deliver(ctx, l, in, target, msgs); err != nil {
					cancel(err)
					return
				}
				if ctx.Err() != nil {
					return
				}
				release(msgs[:len(msgs)-l.back]) // those put back are still held
			}
		}()
	}
	for {
		jm, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				break
			}
			cancel(err)
			break
		}
		if err := w.dispatch(ctx, jm, in, inProcess, rd, disp, ls, skip, &heldMu, inHand); err != nil {
			cancel(err)
			break
		}
	}
	cancel(nil)
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// dispatch routes one pulled message: to its device's lane, or done at
// once when it is filtered out (or re-driven to another integration),
// already delivered by its lane, or undecodable (dead-lettered).
func (w *worker) dispatch(ctx context.Context, jm jetstream.Msg, in Integration, inProcess bool, rd redrives, disp *lane, ls []*lane, skip func(tuid string, lane int, seq uint64) bool, heldMu *sync.Mutex, inHand map[uint64]jetstream.Msg) error {
	md, err := jm.Metadata()
	if err != nil {
		return err
	}
	seq := md.Sequence.Stream
	heldMu.Lock()
	_, dup := inHand[seq]
	if !dup {
		inHand[seq] = jm
	}
	heldMu.Unlock()
	if dup {
		return nil // a redelivery of a message already in a lane
	}
	disp.fl.add(seq)
	finish := func() error {
		heldMu.Lock()
		delete(inHand, seq)
		heldMu.Unlock()
		if err := jm.Ack(); err != nil {
			return err
		}
		w.updateLazy(func(s *State) { s.AckedThrough = max(s.AckedThrough, disp.fl.done(seq)) })
		return nil
	}
	if rd.foreign(jm) {
		return finish()
	}
	sm, err := w.e.msgs.Decode(ctx, w.tenant, seq, md.Timestamp, jm.Headers(), jm.Data())
	if errors.Is(err, store.ErrUnreadable) {
		w.e.log.Error("undecodable message dead-lettered", "tenant_id", w.tenant, "integration_id", w.id, "seq", seq, "error", err)
		h := []held{{msg: jm, md: md}}
		if err := w.deadLetter(ctx, disp, h, "message cannot be decoded", 0, true); err != nil {
			return err
		}
		heldMu.Lock()
		delete(inHand, seq)
		heldMu.Unlock()
		return nil
	}
	if err != nil {
		return err
	}
	if inProcess && sm.RedrivenAt.IsZero() && !in.Filter.Matches(sm.Gateway, sm.Tuid, sm.TsmID) {
		return finish()
	}
	i := laneOf(sm.Tuid, len(ls))
	if skip(sm.Tuid, i, seq) { // delivered by its lane (or its former lane) before a restart
		return finish()
	}
	ls[i].push(held{msg: jm, md: md, m: Message{
		Seq: sm.Seq, ID: sm.ID, Gateway: sm.Gateway, Tuid: sm.Tuid, TsmID: sm.TsmID, ReceivedAt: sm.ReceivedAt, RedrivenAt: sm.RedrivenAt, Body: sm.Message,
	}})
	return nil
}
