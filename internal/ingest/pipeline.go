package ingest

import (
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// This file is the pipelining of one gateway connection (README.md,
// "Pipelining"): the read loop hands each publish to the accept core
// (Core.Begin) and reads the next one while JetStream stores the earlier
// ones; an acker answers them in the order they were read, as their writes
// complete, several PUBACKs in one write.
//
// How it sits in mochi (v2.7.9) without a fork:
//   - OnPublish returns packets.ErrRejectPacket for every gateway publish:
//     processPublish then returns at once, with nothing written and no
//     inflight entry (mochi server.go:913-917), and mochi's receive quota
//     is never taken (server.go:937, 863). So the hook keeps Receive
//     Maximum itself: admit.
//   - The acker writes its PUBACKs with cl.Lock() held, the lock mochi's
//     Client.WritePacket holds for its own write to the connection
//     (clients.go:602-631). Every other write to a client goes through
//     WritePacket: WriteLoop's deliveries on down/ (clients.go:194-204),
//     DisconnectClient (server.go:1414-1438), CONNACK, SUBACK, PINGRESP. So
//     a write of ours never interleaves with one of mochi's. mochi's own
//     write buffer (Net.outbuf, filled while WriteLoop has packets queued,
//     clients.go:612-630) is never used: ClientNetWriteBufferSize is 1
//     (ingest.go), so each packet mochi writes reaches the connection
//     within its WritePacket. Otherwise a refusal written by WritePacket
//     (the acker's, or the ACL's 0x87) while a delivery was queued (a
//     report on down/errors is one) waited in that buffer, and the next
//     PUBACKs, written straight to the connection, overtook it.
//   - The only answers mochi still writes itself are the ACL's refusal
//     (0x87, or a DISCONNECT under 3.1.1, server.go:867-883) and the
//     protocol errors it finds before OnPublish: OnACLCheck and the QoS 2
//     refusal drain the pipeline first (drain), so such an answer comes
//     after every earlier publish's.

// pipeline is one connection's publishes in flight, in the order they were
// read, and its acker: a goroutine started when the first publish is
// queued and gone when the queue is empty (an idle connection has none).
type pipeline struct {
	h   *hook
	s   *session
	cl  *mqtt.Client
	max int // Receive Maximum: QoS 1 publishes in flight
	v5  bool

	mu   sync.Mutex
	cond *sync.Cond // a ticket left, the acker stopped, or no more is admitted
	// queue holds the tickets in the order they were read.
	queue []*ticket
	// unacked counts the QoS 1 publishes admitted and not yet answered;
	// admitted the publishes admitted and not yet queued (in Core.Begin).
	unacked, admitted int
	running           bool // the acker runs
	// broken: nothing more is acknowledged on this connection (a publish
	// was not stored, a write failed, the connection is being ended).
	broken bool
	// closing: the server shuts down; nothing more is admitted, what is
	// queued is answered (goodbye).
	closing bool
}

// ticket is one publish in the pipeline.
type ticket struct {
	packetID uint16
	qos1     bool
	pending  *Pending // an upload (&upload); nil for a status, whose verdict is known
	upload   Pending
	verdict  verdict
}

// tickets recycles the tickets, with the Pending of their upload: OnPublish
// takes one for each publish and queues it (push); the acker (run), the
// only one to take it off the queue, puts it back once it answered the
// publish, when nothing refers to it any more.
var tickets = sync.Pool{New: func() any { return new(ticket) }}

// newTicket returns a cleared ticket of the pool.
func newTicket(packetID uint16, qos1 bool) *ticket {
	t := tickets.Get().(*ticket)
	t.packetID, t.qos1 = packetID, qos1
	return t
}

// recycle clears t and puts it back into the pool.
func (t *ticket) recycle() {
	*t = ticket{}
	tickets.Put(t)
}

// verdict is what a publish gets once its writes are settled.
type verdict struct {
	// ack: a PUBACK (QoS 1 only) with code as its reason code: 0x00, or a
	// refusal (MQTT 5) with its reason string.
	ack bool
	// close: no PUBACK; the connection is ended with code (DISCONNECT),
	// and nothing after this publish is acknowledged.
	close bool
	code  packets.Code
}

func newPipeline(h *hook, s *session, cl *mqtt.Client) *pipeline {
	p := &pipeline{h: h, s: s, cl: cl, max: h.cfg.ReceiveMaximum, v5: v5(cl)}
	p.cond = sync.NewCond(&p.mu)
	return p
}

// admit makes room for one publish read from the connection, and reports
// false when it is not to be taken (nothing stored, nothing answered): the
// pipeline is broken or closing, or an MQTT 5 client sent a QoS 1 publish
// beyond Receive Maximum, which ends its connection with DISCONNECT 0x93
// ([MQTT-3.3.4-9]). An MQTT 3.1.1 client, which is told no maximum, is not
// read until the oldest publish is answered; a QoS 0 publish likewise waits
// while max publishes are queued. It runs in the connection's read loop;
// every admitted publish must be queued (push).
func (p *pipeline) admit(qos1 bool) bool {
	p.mu.Lock()
	for {
		if p.broken || p.closing {
			p.mu.Unlock()
			return false
		}
		full := p.unacked >= p.max
		if !qos1 {
			full = len(p.queue)+p.admitted >= p.max
		}
		if !full {
			break
		}
		if qos1 && p.v5 {
			p.broken = true
			p.cond.Broadcast()
			p.mu.Unlock()
			p.h.m.publishRefused.WithLabelValues("receive_maximum").Inc()
			_ = p.h.broker.DisconnectClient(p.cl, packets.ErrReceiveMaximum)
			return false
		}
		p.cond.Wait()
	}
	if qos1 {
		p.unacked++
	}
	p.admitted++
	p.mu.Unlock()
	return true
}

// push queues an admitted publish and starts the acker if it is not running.
func (p *pipeline) push(t *ticket) {
	p.mu.Lock()
	p.admitted--
	p.queue = append(p.queue, t)
	if !p.running {
		p.running = true
		go p.run()
	}
	p.mu.Unlock()
}

// breakOff acknowledges nothing more on this connection.
func (p *pipeline) breakOff() {
	p.mu.Lock()
	p.broken = true
	p.cond.Broadcast()
	p.mu.Unlock()
}

// drain waits until every publish admitted so far is answered (or dropped,
// once broken) and the acker stopped.
func (p *pipeline) drain() {
	p.mu.Lock()
	for len(p.queue) > 0 || p.admitted > 0 || p.running {
		p.cond.Wait()
	}
	p.mu.Unlock()
}

// close admits nothing more, waits until what was admitted is answered,
// and then acknowledges nothing more: the connection is about to end.
func (p *pipeline) close() {
	p.mu.Lock()
	p.closing = true
	p.cond.Broadcast()
	p.mu.Unlock()
	p.drain()
	p.breakOff()
}

// run is the acker. It takes the queue's head, waits for its writes,
// and answers it; while the next head's writes are still in flight it
// writes the PUBACKs gathered so far (one TLS record, one write). So
// PUBACKs go out in the order the publishes were read, none before its
// publish is stored, none at all after a publish that was not (broken),
// and as many in one write as completed together. Once broken it still
// waits for each queued upload (the core's in-flight bound is given back
// only then) but answers none.
func (p *pipeline) run() {
	var buf []byte // success PUBACKs not yet written
	for {
		p.mu.Lock()
		if len(p.queue) == 0 {
			if len(buf) > 0 {
				p.mu.Unlock()
				buf = p.flush(buf)
				continue // a publish may have been queued meanwhile
			}
			p.running = false
			p.cond.Broadcast()
			p.mu.Unlock()
			return
		}
		t := p.queue[0]
		p.mu.Unlock()

		if len(buf) > 0 && !t.ready() {
			buf = p.flush(buf)
		}
		v := p.settle(t)

		p.mu.Lock()
		p.queue[0] = nil
		p.queue = p.queue[1:]
		if t.qos1 {
			p.unacked--
		}
		broken := p.broken
		p.cond.Broadcast()
		p.mu.Unlock()

		switch {
		case broken:
		case v.close:
			p.flush(buf)
			buf = buf[:0]
			p.breakOff()
			_ = p.h.broker.DisconnectClient(p.cl, v.code)
		case !t.qos1 || !v.ack:
		case v.code.Code == packets.CodeSuccess.Code:
			// PUBACK, Remaining Length 2: the packet id alone. MQTT 5 lets
			// a success with no properties omit the reason code
			// ([MQTT-3.4.2.1]); MQTT 3.1.1 has none.
			buf = append(buf, packets.Puback<<4, 2, byte(t.packetID>>8), byte(t.packetID))
		default: // a refusal with its reason string: mochi encodes it
			buf = p.flush(buf)
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: t.packetID,
				ReasonCode: v.code.Code, Properties: packets.Properties{ReasonString: v.code.Reason}}
			if err := p.cl.WritePacket(pk); err != nil {
				p.breakOff()
			}
		}
		t.recycle()
	}
}

// ready reports, without blocking, whether the ticket's writes are settled.
func (t *ticket) ready() bool { return t.pending == nil || t.pending.Ready() }

// settle waits for the ticket's writes and returns its verdict; an upload's
// report of rejections is published on the gateway's errors topic first,
// unless the pipeline is broken.
func (p *pipeline) settle(t *ticket) verdict {
	if t.pending == nil {
		return t.verdict
	}
	out := t.pending.Wait()
	p.mu.Lock()
	broken := p.broken
	p.mu.Unlock()
	if broken {
		return verdict{}
	}
	if out.Report != nil {
		p.h.report(p.s, t.packetID, out.Report)
	}
	return p.h.verdict(p.s, t.qos1, out)
}

// flush writes the gathered PUBACKs in one write, under the client's lock
// (see the top of this file), unless the pipeline broke meanwhile: a
// DISCONNECT written by another goroutine after it set broken is never
// followed by a PUBACK. A failed write breaks the pipeline.
func (p *pipeline) flush(buf []byte) []byte {
	if len(buf) == 0 {
		return buf
	}
	p.cl.Lock()
	p.mu.Lock()
	broken := p.broken
	p.mu.Unlock()
	var err error
	if !broken {
		_, err = p.cl.Net.Conn.Write(buf)
	}
	p.cl.Unlock()
	if err != nil {
		p.breakOff()
	}
	return buf[:0]
}
