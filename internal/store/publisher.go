package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// publishTimeout is how long a write waits for JetStream's acknowledgement
// before it counts as failed (not persisted), as the JetStream client's
// asynchronous publish timeout was.
var publishTimeout = 10 * time.Second

// errNoAck is the failure of a write whose acknowledgement did not come.
var errNoAck = errors.New("no acknowledgement from JetStream")

// publisher hands the ingest's writes to JetStream with core NATS
// publishes and routes JetStream's acknowledgements to the writes waiting
// for them through one subscription. It does what the JetStream client's
// asynchronous publish does for each message (a reply subject, a future,
// a timeout) with less: no future, channels or timer per message, and the
// acknowledgement is read by a scan of its few bytes instead of a
// reflective JSON decode. A write counts as stored only on an
// acknowledgement that says so; an error, a missing stream (no responders)
// or no answer within publishTimeout fails it.
type publisher struct {
	nc     *nats.Conn
	prefix string // reply subjects: prefix + a base-36 write number

	seq atomic.Uint64 // the last write number given

	mu      sync.Mutex
	waiting map[uint64]waitingAck
	sub     *nats.Subscription
	err     error // why the publisher cannot start or stopped
	closed  bool
	stop    chan struct{} // closed by close: the sweeper returns

	msgs sync.Pool // *nats.Msg with the header keys in place
}

// waitingAck is one write waiting for its acknowledgement.
type waitingAck struct {
	w        *appending
	deadline int64 // UnixNano
}

func newPublisher(nc *nats.Conn) *publisher {
	p := &publisher{nc: nc, prefix: nc.NewInbox() + ".", waiting: make(map[uint64]waitingAck), stop: make(chan struct{})}
	p.msgs.New = func() any { return &nats.Msg{Header: make(nats.Header, 8)} }
	return p
}

// start subscribes to the acknowledgements once; the caller holds p.mu.
func (p *publisher) start() error {
	if p.sub != nil || p.err != nil {
		return p.err
	}
	sub, err := p.nc.Subscribe(p.prefix+"*", p.onAck)
	if err != nil {
		p.err = fmt.Errorf("subscribe to acknowledgements: %w", err)
		return p.err
	}
	// Acknowledgements must not be dropped as a slow consumer's: a write
	// waits for them (JetStream bounds what is in flight anyway).
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		_ = sub.Unsubscribe()
		p.err = fmt.Errorf("acknowledgement limits: %w", err)
		return p.err
	}
	p.sub = sub
	go p.sweep()
	return nil
}

// appendReply gives a new write number and appends its reply subject to
// dst, for a caller that makes it with other text in one allocation
// (publish's reply and id).
func (p *publisher) appendReply(dst []byte) ([]byte, uint64) {
	id := p.seq.Add(1)
	return strconv.AppendUint(append(dst, p.prefix...), id, 36), id
}

// publish sends one write of w on subject with the given header values
// (pairs of key, value) and data, and reply as its reply subject, made by
// appendReply with the write number id; with id 0 publish makes them. The
// message goes to the connection's buffer before publish returns, so the
// writes of one goroutine reach the stream in order.
func (p *publisher) publish(w *appending, subject, reply string, id uint64, data []byte, hdr ...string) error {
	if id == 0 {
		var b []byte
		b, id = p.appendReply(make([]byte, 0, 64))
		reply = string(b)
	}
	p.mu.Lock()
	if err := p.start(); err != nil {
		p.mu.Unlock()
		return err
	}
	p.waiting[id] = waitingAck{w: w, deadline: time.Now().Add(publishTimeout).UnixNano()}
	p.mu.Unlock()

	m := p.message(subject, data, hdr...)
	m.Reply = reply
	err := p.nc.PublishMsg(m)
	p.recycle(m)
	if err != nil {
		p.mu.Lock()
		delete(p.waiting, id)
		p.mu.Unlock()
		return err
	}
	return nil
}

// message returns a message of the pool with subject, data and the given
// header values (pairs of key, value) and no other header; recycle gives it
// back once published.
func (p *publisher) message(subject string, data []byte, hdr ...string) *nats.Msg {
	m := p.msgs.Get().(*nats.Msg)
	m.Subject, m.Data, m.Reply = subject, data, ""
	for k := range m.Header { // keys of another kind of write
		if !hasKey(hdr, k) {
			delete(m.Header, k)
		}
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		setHeader(m, hdr[i], hdr[i+1])
	}
	return m
}

// recycle puts a message that message returned back into the pool (the
// connection copied it when it was published). It keeps the header keys
// and their slices, not the values: a record's strings may point into the
// caller's buffers (the ingest's tsmTuid is a string over its upload's
// copy of the payload), which a pooled message must not keep reachable.
func (p *publisher) recycle(m *nats.Msg) {
	m.Subject, m.Reply, m.Data = "", "", nil
	for _, vs := range m.Header {
		clear(vs)
	}
	p.msgs.Put(m)
}

func hasKey(pairs []string, k string) bool {
	for i := 0; i < len(pairs); i += 2 {
		if pairs[i] == k {
			return true
		}
	}
	return false
}

// onAck settles the write that an acknowledgement answers.
func (p *publisher) onAck(m *nats.Msg) {
	id, err := strconv.ParseUint(m.Subject[len(p.prefix):], 36, 64)
	if err != nil {
		return
	}
	p.mu.Lock()
	wa, ok := p.waiting[id]
	delete(p.waiting, id)
	p.mu.Unlock()
	if !ok {
		return // timed out already
	}
	dup, err := parseAck(m)
	wa.w.settle(dup, err)
}

// parseAck reads JetStream's answer to a publish: stored, duplicate, or an
// error. Anything it does not recognise as a success is a failure.
func parseAck(m *nats.Msg) (duplicate bool, err error) {
	d := m.Data
	if len(d) == 0 {
		if m.Header.Get("Status") == "503" {
			return false, jetstream.ErrNoStreamResponse
		}
		return false, fmt.Errorf("empty acknowledgement (status %q)", m.Header.Get("Status"))
	}
	if bytes.Contains(d, []byte(`"error"`)) {
		var e struct {
			Error *jetstream.APIError `json:"error"`
		}
		if json.Unmarshal(d, &e) == nil && e.Error != nil {
			return false, e.Error
		}
		return false, fmt.Errorf("unreadable acknowledgement error")
	}
	if !bytes.HasPrefix(d, []byte(`{"stream":`)) || !positiveSeq(d) {
		return false, fmt.Errorf("unexpected acknowledgement %q", d)
	}
	return jsonTrue(d, `"duplicate"`), nil
}

// positiveSeq reports whether the acknowledgement d names a stream
// sequence above 0: a stored message (or the original of a duplicate)
// has one, while JetStream's refusals carry "seq":0 (with their error).
func positiveSeq(d []byte) bool {
	i := bytes.Index(d, []byte(`"seq":`))
	if i < 0 {
		return false
	}
	rest := bytes.TrimLeft(d[i+len(`"seq":`):], " \t")
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	return n > 0 && len(bytes.TrimLeft(rest[:n], "0")) > 0
}

// jsonTrue reports whether the flat JSON object d has key (quoted) set to
// true, whatever the spaces around the colon (JetStream writes both
// `"duplicate": true` and `"duplicate":true`).
func jsonTrue(d []byte, key string) bool {
	i := bytes.Index(d, []byte(key))
	if i < 0 {
		return false
	}
	rest := bytes.TrimLeft(d[i+len(key):], " \t")
	if len(rest) == 0 || rest[0] != ':' {
		return false
	}
	return bytes.HasPrefix(bytes.TrimLeft(rest[1:], " \t"), []byte("true"))
}

// sweep fails the writes whose acknowledgement did not come in time, and
// every waiting write once the connection is closed.
func (p *publisher) sweep() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		closed := p.nc.IsClosed()
		now := time.Now().UnixNano()
		var late []*appending
		p.mu.Lock()
		for id, wa := range p.waiting {
			if closed || wa.deadline < now {
				late = append(late, wa.w)
				delete(p.waiting, id)
			}
		}
		if closed {
			p.err = nats.ErrConnectionClosed
		}
		p.mu.Unlock()
		for _, w := range late {
			w.settle(false, errNoAck)
		}
		if closed {
			return
		}
	}
}

// close fails the writes still waiting for their acknowledgement with
// ErrClosed, and every later one; it ends the acknowledgements'
// subscription and the sweeper, although the connection may stay open.
func (p *publisher) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed, p.err = true, ErrClosed
	sub := p.sub
	late := make([]*appending, 0, len(p.waiting))
	for id, wa := range p.waiting {
		late = append(late, wa.w)
		delete(p.waiting, id)
	}
	p.mu.Unlock()
	close(p.stop)
	if sub != nil {
		_ = sub.Unsubscribe() // fails only if the connection closed: gone anyway
	}
	for _, w := range late {
		w.settle(false, ErrClosed)
	}
}

// appending is the Waiter of a call's writes: it counts their
// acknowledgements as they come and is done when all came or one failed.
type appending struct {
	left   atomic.Int32 // writes not yet acknowledged
	stored atomic.Int32
	dups   atomic.Int32
	once   sync.Once
	err    error // the first failure; set before done is closed
	done   chan struct{}
}

func newAppending(n int) *appending {
	a := &appending{done: make(chan struct{})}
	a.left.Store(int32(n))
	if n == 0 { // through once, so that a later fail does not close it again
		a.once.Do(func() { close(a.done) })
	}
	return a
}

// fail ends the wait with err, unless every write was acknowledged first.
func (a *appending) fail(err error) {
	a.once.Do(func() {
		a.err = fmt.Errorf("store: not persisted: %w", err)
		close(a.done)
	})
}

// settle counts one write's acknowledgement, or its failure.
func (a *appending) settle(duplicate bool, err error) {
	if err != nil {
		a.fail(err)
		return
	}
	if duplicate {
		a.dups.Add(1)
	} else {
		a.stored.Add(1)
	}
	if a.left.Add(-1) == 0 {
		a.once.Do(func() { close(a.done) })
	}
}

func (a *appending) Ready() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

func (a *appending) Wait(ctx context.Context) (AppendResult, error) {
	select {
	case <-a.done:
	case <-ctx.Done():
		a.fail(ctx.Err())
		<-a.done
	}
	return AppendResult{Stored: int(a.stored.Load()), Duplicates: int(a.dups.Load())}, a.err
}
