// Package bench is iotransit's load generator. It connects many gateways
// over MQTT 5 with mutual TLS, each with its own client certificate, through
// the same paho.golang uplink the gateway agent uses (internal/gateway),
// publishes Thingsee messages with QoS 1 to v1/gw/{serial}/up, and measures
// publish-to-PUBACK latency and throughput.
//
// Two load shapes: a closed loop, where each gateway sends its next publish
// as soon as the previous one is acknowledged (one in flight, like a real
// gateway), and an open loop, where publishes are due on a fixed Schedule
// whatever the server does and latency counts from the due time, so a stall
// shows in the percentiles instead of silently lowering the offered load
// (no coordinated omission).
//
// What it measures is a Target: an address and one TLS identity per
// gateway. Measure, what "iotransit bench" calls, makes one of an
// in-process node with its gateways provisioned, runs a mosquitto broker
// (StartMosquitto) as the reference peer for the same load, or measures
// the node's forwarding to a WebhookReceiver; a Report holds the results
// and writes them as a table.
package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/iotransit/iotransit/internal/gateway"
)

// Gateway is one simulated gateway: its serial (the MQTT client id and the
// certificate's CN) and its client TLS configuration, which presents its
// certificate and verifies the server.
type Gateway struct {
	Serial string
	TLS    *tls.Config
	// LocalAddr, when set, is the source address of its connection
	// (SpreadSources).
	LocalAddr net.Addr
}

// Target is an MQTT 5 server under load.
type Target struct {
	// Name labels the results ("iotransit", "mosquitto").
	Name string
	// Addr is the server's host:port.
	Addr string
	// Gateways are the identities to connect, one connection each.
	Gateways []Gateway
	// PID is the server's process when it is not this one (0: in-process
	// or unknown), to tell its CPU time apart in Result.CPU.
	PID int
}

// Config is the shape of one load run.
type Config struct {
	// Warmup is run but not measured; Duration is measured after it.
	Warmup, Duration time.Duration
	// Rate is the total publishes per second on an open-loop Schedule;
	// 0 runs a closed loop (each gateway one publish in flight).
	Rate float64
	// Payload is what each publish carries (default PayloadTypical).
	Payload PayloadKind
	// Window is how many publishes each gateway keeps in flight in the
	// closed loop (default 1, a real gateway's pace): more pipelines
	// publishes on one connection, as mosquitto_pub -l does.
	Window int
	// MaxInflight bounds the publishes in flight per gateway in the open
	// loop (default 100). A gateway at the bound waits; its due publishes
	// are then sent late and measured from their due time.
	MaxInflight int
	// LateGrace is how long after the measured window an open-loop
	// publish due in it may still be sent, late (default 1 s); one not
	// sent by then is counted as missed.
	LateGrace time.Duration
	// ConnectParallel bounds concurrent connection attempts (default 8).
	ConnectParallel int
	// Progress, when set, is told what the run is doing.
	Progress func(format string, args ...any)
	// Tracker, when set, follows every publish of the run (warmup
	// included): the forward benchmark matches what a receiver got with it.
	Tracker Tracker
}

// Tracker follows each publish of a run beyond its PUBACK. Gateway g is the
// index in Target.Gateways, seq the gateway's publish number from 0 (dense:
// every number is Published once, in order, from one goroutine per gateway).
// Its methods are called from many goroutines at once.
type Tracker interface {
	// Published: the payload is handed to the MQTT client at at. The
	// payload's tsmTs is at.Unix() and every message in it has
	// lght = seq mod 200000 (see the payload generator).
	Published(g int, seq int64, at time.Time)
	// Answered: the publish ended; ok is a success PUBACK (code < 0x80).
	Answered(g int, seq int64, ok bool)
}

type noTracker struct{}

func (noTracker) Published(int, int64, time.Time) {}
func (noTracker) Answered(int, int64, bool)       {}

func (c *Config) defaults() error {
	if c.Payload == "" {
		c.Payload = PayloadTypical
	}
	if _, err := ParsePayloadKind(string(c.Payload)); err != nil {
		return err
	}
	if c.MaxInflight <= 0 {
		c.MaxInflight = 100
	}
	if c.Window <= 0 {
		c.Window = 1
	}
	if c.LateGrace <= 0 {
		c.LateGrace = time.Second
	}
	if c.ConnectParallel <= 0 {
		c.ConnectParallel = 8
	}
	if c.Duration <= 0 {
		return errors.New("bench: the measured duration must be positive")
	}
	if c.Warmup < 0 || c.Rate < 0 {
		return errors.New("bench: warmup and rate must not be negative")
	}
	if c.Progress == nil {
		c.Progress = func(string, ...any) {}
	}
	if c.Tracker == nil {
		c.Tracker = noTracker{}
	}
	return nil
}

// Errors counts what went wrong during a run (warmup included).
type Errors struct {
	// Total is the sum of the counts below.
	Total int64 `json:"total"`
	// Refused publishes: a PUBACK with a reason code of 0x80 or more.
	Refused int64 `json:"refused"`
	// Timeouts: no PUBACK within the client's packet timeout (10 s).
	Timeouts int64 `json:"timeouts"`
	// Other publish errors (connection closed while waiting, write errors).
	Other int64 `json:"other"`
	// ConnectionsLost: gateways whose connection ended during the run.
	ConnectionsLost int64 `json:"connections_lost"`
	// Samples are the first few error texts.
	Samples []string `json:"samples,omitempty"`
}

// Result is what one run measured.
type Result struct {
	System     string  `json:"system"`
	Addr       string  `json:"addr"`
	Gateways   int     `json:"gateways"`
	Mode       string  `json:"mode"` // "closed-loop" or "open-loop"
	TargetRate float64 `json:"target_rate,omitempty"`
	// Window is the closed loop's publishes in flight per gateway.
	Window             int     `json:"window,omitempty"`
	Payload            string  `json:"payload"`
	PayloadBytes       int     `json:"payload_bytes"`
	MessagesPerPublish int     `json:"messages_per_publish"`
	WarmupSeconds      float64 `json:"warmup_s"`
	DurationSeconds    float64 `json:"duration_s"`
	// Sent counts the publishes sent whose due time (open loop) or send
	// time (closed loop) is in the measured window; Acked those of them
	// acknowledged with a success code.
	Sent  int64 `json:"sent"`
	Acked int64 `json:"acked"`
	// Missed counts open-loop publishes due in the measured window that
	// were not sent by LateGrace after its end (the gateway was at
	// MaxInflight): offered load the server did not get to see. They are
	// not in Latency.
	Missed int64 `json:"missed,omitempty"`
	// PublishesPerSecond is Acked per second of the measured window;
	// MessagesPerSecond counts Thingsee messages (x10 for array10).
	PublishesPerSecond float64 `json:"publishes_per_s"`
	MessagesPerSecond  float64 `json:"messages_per_s"`
	// Latency is publish (or due time) to PUBACK of the Acked publishes.
	Latency LatencySummary `json:"latency"`
	// SendLag (open loop) is how late after their due time the measured
	// publishes were handed to the client: the load generator's own timer
	// and scheduling delay, part of Latency.
	SendLag *LatencySummary `json:"send_lag,omitempty"`
	// TotalAcked counts every acknowledged publish, warmup included
	// (compare with what the server stored), TotalMessagesAcked their
	// Thingsee messages.
	TotalAcked         int64 `json:"total_acked"`
	TotalMessagesAcked int64 `json:"total_messages_acked"`
	// CPU is how the machine's CPU was used during the measured window
	// (Linux only).
	CPU *CPUUsage `json:"cpu,omitempty"`
	// WindowStart and WindowEnd bound the measured window.
	WindowStart time.Time `json:"-"`
	WindowEnd   time.Time `json:"-"`
	// ReasonCodes counts non-zero PUBACK reason codes by hex code, the
	// successful ones below 0x80 (mosquitto answers 0x10 "no matching
	// subscribers") included.
	ReasonCodes map[string]int64 `json:"reason_codes,omitempty"`
	Errors      Errors           `json:"errors"`
}

// publisher is one connected gateway session.
type publisher interface {
	// publish sends one QoS 1 publish and waits for its PUBACK.
	publish(ctx context.Context, payload []byte) (reason byte, err error)
	// done is closed when the connection ends.
	done() <-chan struct{}
	close() error
}

type uplinkPublisher struct{ u *gateway.Uplink }

func (p uplinkPublisher) publish(ctx context.Context, payload []byte) (byte, error) {
	res, err := p.u.Publish(ctx, payload, 1)
	return res.ReasonCode, err
}
func (p uplinkPublisher) done() <-chan struct{} { return p.u.Done() }
func (p uplinkPublisher) close() error          { return p.u.Close() }

// Run connects every gateway of t, runs the load of cfg, disconnects and
// returns the measurements. It fails if any gateway cannot connect; errors
// during the load are counted in the result, not returned. Cancelling ctx
// ends the run early.
func Run(ctx context.Context, t Target, cfg Config) (*Result, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if len(t.Gateways) == 0 {
		return nil, errors.New("bench: no gateways to connect")
	}
	cfg.Progress("%s: connecting %d gateways to %s", t.Name, len(t.Gateways), t.Addr)
	pubs, err := connect(ctx, t, cfg.ConnectParallel)
	if err != nil {
		return nil, err
	}
	defer func() {
		var wg sync.WaitGroup
		for _, p := range pubs {
			wg.Go(func() { _ = p.close() })
		}
		wg.Wait()
	}()
	serials := make([]string, len(t.Gateways))
	for i, g := range t.Gateways {
		serials[i] = g.Serial
	}
	res := run(ctx, pubs, serials, cfg, t.PID)
	res.System, res.Addr = t.Name, t.Addr
	return res, nil
}

// connect dials every gateway, at most parallel at once.
func connect(ctx context.Context, t Target, parallel int) ([]publisher, error) {
	pubs := make([]publisher, len(t.Gateways))
	errs := make([]error, len(t.Gateways))
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i, g := range t.Gateways {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			u, err := gateway.Dial(dctx, gateway.UplinkConfig{Addr: t.Addr, Serial: g.Serial, TLS: g.TLS, LocalAddr: g.LocalAddr})
			if err != nil {
				errs[i] = fmt.Errorf("bench: connect gateway %s to %s %s: %w", g.Serial, t.Name, t.Addr, err)
				return
			}
			pubs[i] = uplinkPublisher{u}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, p := range pubs {
			if p != nil {
				_ = p.close()
			}
		}
		return nil, err
	}
	return pubs, nil
}

// maxSamples bounds Errors.Samples.
const maxSamples = 5

// gwStats are one gateway's counts; the open loop updates them from many
// goroutines, hence the lock.
type gwStats struct {
	mu         sync.Mutex
	lat        []time.Duration
	lag        []time.Duration
	sent       int64
	acked      int64
	totalAcked int64
	missed     int64
	codes      map[byte]int64
	errs       Errors
	lost       bool
}

// window is the measured part of a run.
type window struct{ start, end time.Time }

func (w window) measured(t time.Time) bool { return !t.Before(w.start) && t.Before(w.end) }

// record counts the outcome of one publish that was due (or sent) at due
// and answered at done.
func (s *gwStats) record(w window, due, done time.Time, reason byte, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := w.measured(due)
	if reason != 0 {
		if s.codes == nil {
			s.codes = map[byte]int64{}
		}
		s.codes[reason]++
	}
	switch {
	case err == nil && reason < 0x80:
		s.totalAcked++
		if in {
			s.acked++
			s.lat = append(s.lat, done.Sub(due))
		}
		return
	case err == nil:
		s.errs.Refused++
		s.sample(fmt.Sprintf("PUBACK reason 0x%02x", reason))
	case errors.Is(err, context.Canceled):
		return // the run was interrupted: not the server's failure
	case errors.Is(err, context.DeadlineExceeded):
		s.errs.Timeouts++
		s.sample(err.Error())
	default:
		s.errs.Other++
		s.sample(err.Error())
	}
}

func (s *gwStats) sample(msg string) {
	if len(s.errs.Samples) < maxSamples {
		s.errs.Samples = append(s.errs.Samples, msg)
	}
}

// run drives the connected publishers and merges their stats.
func run(ctx context.Context, pubs []publisher, serials []string, cfg Config, pid int) *Result {
	start := time.Now()
	w := window{start: start.Add(cfg.Warmup), end: start.Add(cfg.Warmup + cfg.Duration)}
	var cpu *CPUUsage
	cpuDone := make(chan struct{})
	go func() { // CPU use over the measured window
		defer close(cpuDone)
		if !sleepUntil(ctx, w.start) {
			return
		}
		a := readCPU(pid)
		if !sleepUntil(ctx, w.end) {
			return
		}
		cpu = usage(a, readCPU(pid), runtime.NumCPU())
	}()
	mode := "closed-loop"
	if cfg.Rate > 0 {
		mode = "open-loop"
		cfg.Progress("open loop at %g publishes/s: warmup %s, measuring %s", cfg.Rate, cfg.Warmup, cfg.Duration)
	} else {
		cfg.Progress("closed loop, %d publishes in flight per gateway: warmup %s, measuring %s", cfg.Window, cfg.Warmup, cfg.Duration)
	}
	sched := Schedule{Start: start, Rate: cfg.Rate, Gateways: len(pubs)}
	stats := make([]*gwStats, len(pubs))
	var wg sync.WaitGroup
	for i, p := range pubs {
		stats[i] = &gwStats{}
		gen := newPayloadGen(cfg.Payload, i, serials[i])
		wg.Go(func() {
			if cfg.Rate > 0 {
				openLoop(ctx, p, gen, stats[i], sched, i, w, cfg.MaxInflight, cfg.LateGrace, cfg.Tracker)
			} else {
				closedLoop(ctx, p, gen, stats[i], i, w, cfg.Window, cfg.Tracker)
			}
		})
	}
	wg.Wait()
	<-cpuDone

	res := &Result{
		CPU: cpu, WindowStart: w.start, WindowEnd: w.end,
		Gateways: len(pubs), Mode: mode, TargetRate: cfg.Rate,
		Payload: string(cfg.Payload), MessagesPerPublish: cfg.Payload.Messages(),
		PayloadBytes:  len(newPayloadGen(cfg.Payload, 0, serialOr(serials)).next(start)),
		WarmupSeconds: cfg.Warmup.Seconds(), DurationSeconds: cfg.Duration.Seconds(),
	}
	var lat, lag []time.Duration
	codes := map[byte]int64{}
	for _, s := range stats {
		lat = append(lat, s.lat...)
		lag = append(lag, s.lag...)
		res.Sent += s.sent
		res.Acked += s.acked
		res.Missed += s.missed
		res.TotalAcked += s.totalAcked
		for c, n := range s.codes {
			codes[c] += n
		}
		e := &res.Errors
		e.Refused += s.errs.Refused
		e.Timeouts += s.errs.Timeouts
		e.Other += s.errs.Other
		if s.lost {
			e.ConnectionsLost++
		}
		for _, m := range s.errs.Samples {
			if len(e.Samples) < maxSamples {
				e.Samples = append(e.Samples, m)
			}
		}
	}
	res.Errors.Total = res.Errors.Refused + res.Errors.Timeouts + res.Errors.Other + res.Errors.ConnectionsLost
	if len(codes) > 0 {
		res.ReasonCodes = map[string]int64{}
		for c, n := range codes {
			res.ReasonCodes[fmt.Sprintf("0x%02x", c)] = n
		}
	}
	if cfg.Rate == 0 {
		res.Window = cfg.Window
	}
	res.TotalMessagesAcked = res.TotalAcked * int64(res.MessagesPerPublish)
	res.PublishesPerSecond = float64(res.Acked) / cfg.Duration.Seconds()
	res.MessagesPerSecond = res.PublishesPerSecond * float64(res.MessagesPerPublish)
	res.Latency = Summarize(lat)
	if cfg.Rate > 0 {
		l := Summarize(lag)
		res.SendLag = &l
	}
	return res
}

// sleepUntil waits until t; it reports false if ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func serialOr(serials []string) string {
	if len(serials) > 0 {
		return serials[0]
	}
	return "TSGW06BNC00000000"
}

// lost marks the gateway's connection as ended, if it has.
func lost(p publisher, s *gwStats) bool {
	select {
	case <-p.done():
		s.mu.Lock()
		s.lost = true
		s.mu.Unlock()
		return true
	default:
		return false
	}
}

// sender sends one gateway's publishes, each from its own goroutine, at
// most a bound in flight at once, and records their outcomes.
type sender struct {
	p   publisher
	s   *gwStats
	g   int
	w   window
	tr  Tracker
	sem chan struct{}
	wg  sync.WaitGroup
}

func newSender(p publisher, s *gwStats, g int, w window, inflight int, tr Tracker) *sender {
	return &sender{p: p, s: s, g: g, w: w, tr: tr, sem: make(chan struct{}, inflight)}
}

// acquire waits for a free slot; false when ctx ended or the connection
// was lost first.
func (x *sender) acquire(ctx context.Context) bool {
	select {
	case x.sem <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	case <-x.p.done():
		lost(x.p, x.s)
		return false
	}
}

// send publishes payload (publish seq of the gateway, measured from due)
// in the slot acquired, which it frees when answered.
func (x *sender) send(ctx context.Context, seq int64, payload []byte, due time.Time) {
	x.wg.Go(func() {
		defer func() { <-x.sem }()
		reason, err := x.p.publish(ctx, payload)
		x.tr.Answered(x.g, seq, err == nil && reason < 0x80)
		x.s.record(x.w, due, time.Now(), reason, err)
		if err != nil {
			lost(x.p, x.s)
		}
	})
}

// closedLoop keeps inflight publishes of gateway g in flight until the
// window ends: the next is sent as soon as one is answered (with inflight
// 1, one at a time, as a real gateway does).
func closedLoop(ctx context.Context, p publisher, gen *payloadGen, s *gwStats, g int, w window, inflight int, tr Tracker) {
	x := newSender(p, s, g, w, inflight, tr)
	defer x.wg.Wait()
	for ctx.Err() == nil && x.acquire(ctx) {
		sent := time.Now()
		if !sent.Before(w.end) {
			return
		}
		if w.measured(sent) {
			s.mu.Lock()
			s.sent++
			s.mu.Unlock()
		}
		seq := gen.seq
		payload := gen.next(sent)
		tr.Published(g, seq, sent)
		x.send(ctx, seq, payload, sent)
	}
}

// openLoop sends gateway g's publishes due before the window ends at their
// due times, each from its own goroutine, at most maxInflight at once; a
// publish still unsent grace after the window is missed, with the rest.
func openLoop(ctx context.Context, p publisher, gen *payloadGen, s *gwStats, sched Schedule, g int, w window, maxInflight int, grace time.Duration, tr Tracker) {
	x := newSender(p, s, g, w, maxInflight, tr)
	defer x.wg.Wait()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	due := sched.Count(g, w.end)
	for j := range due {
		at := sched.At(g, j)
		if d := time.Until(at); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return
			case <-p.done():
				lost(p, s)
				return
			case <-timer.C:
			}
		}
		if !x.acquire(ctx) {
			return
		}
		now := time.Now()
		if !now.Before(w.end.Add(grace)) { // far behind schedule: the rest is never sent
			<-x.sem
			s.mu.Lock()
			s.missed += int64(due - max(j, sched.Count(g, w.start)))
			s.mu.Unlock()
			return
		}
		if w.measured(at) {
			s.mu.Lock()
			s.sent++
			s.lag = append(s.lag, now.Sub(at))
			s.mu.Unlock()
		}
		seq := gen.seq
		payload := gen.next(now)
		tr.Published(g, seq, now)
		x.send(ctx, seq, payload, at)
	}
}
