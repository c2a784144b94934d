package ingest

import (
	"errors"
	"net"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// The handshake gate paces TLS handshakes so that a reconnect storm (every
// gateway of a site back at once after an outage) does not take every core
// from the gateways already connected: a handshake costs about half a
// millisecond of CPU (key exchange, a signature, the client's signature and
// chain checked in Authenticate), and before the gate up to
// MaxPendingHandshakes of them ran at once.
//
// Two bounds: a token bucket on the handshakes started (HandshakeRate, a
// tenth of a second's worth of burst), and at most HandshakeConcurrency
// handshakes computing at once. A handshake holds a slot only while it
// computes, never while it waits for its peer (gatedConn gives the slot
// back around each read), so a peer that sends its handshake slowly holds
// no slot and cannot stall everybody else's. A connection waits for its
// token and its slots within its ConnectTimeout deadline, still one of the
// MaxPendingHandshakes; past the deadline it is closed and counted
// (handshake_wait_timeout).

// reasonHandshakeWait is the refusal of a connection whose connect timeout
// passed while it waited for the handshake gate.
const reasonHandshakeWait = "handshake_wait_timeout"

// errGateClosed says the listener closed while a connection waited.
var errGateClosed = errors.New("ingest: listener closed")

// handshakeGate bounds the TLS handshakes started per second and those
// computing at once.
type handshakeGate struct {
	slots chan struct{}
	lim   *rate.Limiter // nil: no rate bound
	stop  <-chan struct{}
	m     *gateMetrics

	// waiting and running count the connections waiting at the gate and
	// the handshakes holding a slot; peak is running's highest value.
	waiting, running, peak atomic.Int64
}

// gateMetrics are the gate's series.
type gateMetrics struct {
	wait       prometheus.Histogram
	handshakes *prometheus.CounterVec
	waiting    prometheus.GaugeFunc
	running    prometheus.GaugeFunc
}

// defaultHandshakeConcurrency is half the CPUs Go may use, at least one:
// live traffic keeps the other half during a storm.
func defaultHandshakeConcurrency() int { return max(1, runtime.GOMAXPROCS(0)/2) }

// newHandshakeGate returns a gate of concurrency slots and perSecond
// handshakes started per second (0: no rate bound); stop ends every wait.
func newHandshakeGate(concurrency int, perSecond float64, stop <-chan struct{}, reg prometheus.Registerer) *handshakeGate {
	g := &handshakeGate{slots: make(chan struct{}, max(1, concurrency)), stop: stop}
	if perSecond > 0 {
		g.lim = rate.NewLimiter(rate.Limit(perSecond), max(1, int(perSecond/10)))
	}
	g.m = &gateMetrics{
		wait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "iotransit_ingest_handshake_wait_seconds",
			Help:    "Time a gateway connection waited at the handshake gate (rate and concurrency bounds) before and during its TLS handshake.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "iotransit_ingest_handshakes_total",
			Help: "TLS handshakes of gateway connections run through the handshake gate, by result (ok, failed).",
		}, []string{"result"}),
		waiting: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "iotransit_ingest_handshakes_waiting",
			Help: "Gateway connections waiting at the handshake gate.",
		}, func() float64 { return float64(g.waiting.Load()) }),
		running: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "iotransit_ingest_handshakes_running",
			Help: "TLS handshakes computing now (at most the handshake concurrency).",
		}, func() float64 { return float64(g.running.Load()) }),
	}
	if reg != nil {
		reg.MustRegister(g.m.wait, g.m.handshakes, g.m.waiting, g.m.running)
	}
	return g
}

// admit waits for the connection's handshake token, within deadline. It
// returns os.ErrDeadlineExceeded when the deadline comes first, and
// errGateClosed when the listener closes.
func (g *handshakeGate) admit(deadline time.Time) error {
	if g.lim == nil {
		return nil
	}
	now := time.Now()
	r := g.lim.ReserveN(now, 1)
	d := r.DelayFrom(now)
	if d == 0 {
		return nil
	}
	if now.Add(d).After(deadline) {
		r.CancelAt(now)
		return os.ErrDeadlineExceeded
	}
	if err := g.sleep(d); err != nil {
		r.Cancel()
		return err
	}
	return nil
}

// sleep waits d, or until the listener closes.
func (g *handshakeGate) sleep(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-g.stop:
		return errGateClosed
	}
}

// enter takes a slot, waiting within deadline (waiters are served in
// order).
func (g *handshakeGate) enter(deadline time.Time) error {
	select {
	case g.slots <- struct{}{}:
	default:
		d := time.Until(deadline)
		if d <= 0 {
			return os.ErrDeadlineExceeded
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case g.slots <- struct{}{}:
		case <-t.C:
			return os.ErrDeadlineExceeded
		case <-g.stop:
			return errGateClosed
		}
	}
	n := g.running.Add(1)
	for p := g.peak.Load(); n > p && !g.peak.CompareAndSwap(p, n); p = g.peak.Load() {
	}
	return nil
}

// leave gives a slot back.
func (g *handshakeGate) leave() {
	g.running.Add(-1)
	<-g.slots
}

// gatedConn is the connection a TLS handshake runs on: it holds a slot of
// the gate while the handshake computes and gives it back while it waits
// for the peer (Read), taking one again, in line with the others, before
// it goes on. Once the handshake ended (done), it is the bare connection.
type gatedConn struct {
	net.Conn
	g        *handshakeGate
	deadline time.Time

	// inGate, waited and waitedOut are the handshake's, which runs on one
	// goroutine (its reads, then done). waitedOut: its connect timeout
	// passed while it waited for a slot (the gate's refusal, not the peer's
	// slowness).
	inGate    bool
	waited    time.Duration
	waitedOut bool
}

// start admits the handshake and takes its first slot. A connection
// refused here (its connect timeout passed) has its wait recorded too, so
// that the histogram shows the waits that ran out, not only those that
// got through.
func (c *gatedConn) start() (err error) {
	t := time.Now()
	c.g.waiting.Add(1)
	defer func() {
		c.g.waiting.Add(-1)
		c.waited += time.Since(t)
		if err != nil && !errors.Is(err, errGateClosed) {
			c.g.m.wait.Observe(c.waited.Seconds())
		}
	}()
	if err := c.g.admit(c.deadline); err != nil {
		return err
	}
	if err := c.g.enter(c.deadline); err != nil {
		return err
	}
	c.inGate = true
	return nil
}

// Read leaves the gate while it waits for the peer during the handshake.
func (c *gatedConn) Read(p []byte) (int, error) {
	if !c.inGate {
		return c.Conn.Read(p)
	}
	c.g.leave()
	c.inGate = false
	n, err := c.Conn.Read(p)
	if err != nil {
		return n, err
	}
	t := time.Now()
	c.g.waiting.Add(1)
	err = c.g.enter(c.deadline)
	c.g.waiting.Add(-1)
	c.waited += time.Since(t)
	if err != nil {
		c.waitedOut = errors.Is(err, os.ErrDeadlineExceeded)
		return 0, err
	}
	c.inGate = true
	return n, nil
}

// done ends the handshake: the slot is given back and reads are no longer
// gated. It records the handshake's wait and result.
func (c *gatedConn) done(ok bool) {
	if c.inGate {
		c.g.leave()
		c.inGate = false
	}
	c.g.m.wait.Observe(c.waited.Seconds())
	result := "ok"
	if !ok {
		result = "failed"
	}
	c.g.m.handshakes.WithLabelValues(result).Inc()
}
