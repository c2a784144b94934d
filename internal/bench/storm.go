package bench

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// The storm bench: a few live gateways publish at a steady rate while many
// others connect at once (a reconnect storm, as after a site's outage). It
// reports the live gateways' publish latency before and during the storm,
// and whether every storm gateway got connected, and how fast. The live
// gateways run in a process of their own (live.go): in the storm's process
// their latency would be the storm's goroutines starving them.

// StormOptions say which server MeasureStorm measures and how.
type StormOptions struct {
	// Server is the server and how to provision its gateways (as
	// IdleOptions.Server).
	Server ExternalOptions
	// Live gateways publish Rate publishes per second in all, one in
	// flight each, on a fixed schedule (latency counts from the due time).
	Live int
	Rate float64
	// Storm gateways connect at once after Quiet of live load.
	Storm int
	Quiet time.Duration
	// Tenants as in IdleOptions (0: one per TenantGateways).
	Tenants int
	// Patience is how long a storm gateway keeps trying to connect
	// (default 5 minutes), with a backoff from 100 ms to 5 s after a
	// refusal.
	Patience time.Duration
	// Progress, when set, is told what the run is doing.
	Progress func(format string, args ...any)
	// LiveExecutable runs the live gateways: an executable that, with
	// LiveChildEnv set, runs RunLiveChild ("": this one; the iotransit
	// command does, and the bench's test binaries).
	LiveExecutable string
}

// StormReport is what MeasureStorm measured.
type StormReport struct {
	Header
	System string  `json:"system"`
	Addr   string  `json:"addr"`
	Live   int     `json:"live"`
	Rate   float64 `json:"rate"`
	Storm  int     `json:"storm"`
	// LiveBefore and LiveDuring are the live gateways' publish latencies
	// (due time to PUBACK) of the publishes due before the storm and
	// during it (until the last storm gateway connected).
	LiveBefore LatencySummary `json:"liveBefore"`
	LiveDuring LatencySummary `json:"liveDuring"`
	// LiveErrors are the live publishes that failed (refused, timed out,
	// connection lost), LiveSamples the first texts.
	LiveErrors  int64    `json:"liveErrors"`
	LiveSamples []string `json:"liveErrorSamples,omitempty"`
	// LivePID is the process the live gateways ran in, not the storm's.
	LivePID int `json:"livePid"`
	// StormConnected storm gateways got their CONNACK, StormFailed did
	// not within Patience; StormSeconds is the time from the storm's start
	// to the last CONNACK, StormConnect one gateway's time from its first
	// attempt to its CONNACK, StormAttempts the connection attempts
	// (retries after a refusal included), StormErrors the failed attempts
	// by kind.
	StormConnected int              `json:"stormConnected"`
	StormFailed    int              `json:"stormFailed"`
	StormSeconds   float64          `json:"stormSeconds"`
	StormConnect   LatencySummary   `json:"stormConnect"`
	StormAttempts  int64            `json:"stormAttempts"`
	StormErrors    map[string]int64 `json:"stormErrors,omitempty"`
	// ServerBefore is read before the storm, ServerAfter after it: the
	// refusals by reason tell how the server paced it.
	ServerBefore ServerSample    `json:"serverBefore"`
	ServerAfter  ServerSample    `json:"serverAfter"`
	Provision    *ProvisionStats `json:"provision,omitempty"`
}

func (o *StormOptions) defaults() error {
	if o.Live < 1 || o.Storm < 1 || o.Rate <= 0 {
		return fmt.Errorf("bench: storm of %d gateways with %d live at %g/s: want at least one of each and a positive rate", o.Storm, o.Live, o.Rate)
	}
	if o.Tenants <= 0 {
		o.Tenants = (o.Live + o.Storm + TenantGateways - 1) / TenantGateways
	}
	if err := checkOpenFiles(o.Live + o.Storm); err != nil {
		return err
	}
	if o.Patience <= 0 {
		o.Patience = 5 * time.Minute
	}
	if o.Progress == nil {
		o.Progress = func(string, ...any) {}
	}
	return nil
}

// MeasureStorm provisions the live and the storm gateways, starts the live
// load, after o.Quiet connects every storm gateway at once, and reports.
func MeasureStorm(ctx context.Context, h Header, o StormOptions) (*StormReport, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	s := o.Server
	op, err := operatorClient(s)
	if err != nil {
		return nil, err
	}
	defer op.Close()
	if s.SourceAddrs == nil {
		// A storm from many hosts: at most 100 connections per loopback
		// address, below the server's pending handshakes per address
		// (128 by default).
		s.SourceAddrs = stormSources(s.MQTTAddr, o.Live+o.Storm)
	}
	gws, prov, err := provisionTenants(ctx, op, s, "storm", o.Live+o.Storm, o.Tenants, o.Progress)
	if err != nil {
		return nil, err
	}
	live, storm := gws[:o.Live], gws[o.Live:]
	rep := &StormReport{Header: h, System: "iotransit", Addr: s.MQTTAddr, Live: o.Live, Rate: o.Rate, Storm: o.Storm, Provision: prov, StormErrors: map[string]int64{}}

	spec, err := newLiveSpec(s.MQTTAddr, s.CAPEM, o.Rate, live)
	if err != nil {
		return nil, err
	}
	lp, err := startLive(ctx, o.LiveExecutable, spec)
	if err != nil {
		return nil, err
	}
	defer lp.kill()
	rep.LivePID = lp.cmd.Process.Pid
	start := lp.Start
	o.Progress("%d live gateways (process %d) publish %g/s in all; the storm of %d starts in %s", o.Live, rep.LivePID, o.Rate, o.Storm, o.Quiet)
	if !sleepUntil(ctx, start.Add(o.Quiet)) {
		return nil, ctx.Err()
	}
	if rep.ServerBefore, err = readServer(ctx, op, s.ServerPID); err != nil {
		return nil, err
	}

	o.Progress("storm: %d gateways connect at once", len(storm))
	stormStart := time.Now()
	conns, lat, last := stormConnect(ctx, s.MQTTAddr, storm, o.Patience, rep, o.Progress)
	defer closeIdle(conns)
	stormEnd := time.Now()
	rep.StormSeconds = last.Sub(stormStart).Seconds()
	rep.StormConnect = Summarize(lat)
	o.Progress("storm over in %.1fs: %d connected, %d failed", rep.StormSeconds, rep.StormConnected, rep.StormFailed)
	lr, err := lp.stop(ctx)
	if err != nil {
		return nil, err
	}
	if rep.ServerAfter, err = readServer(ctx, op, s.ServerPID); err != nil {
		return nil, err
	}

	var before, during []time.Duration
	for _, ss := range lr.Samples {
		for _, x := range ss {
			switch {
			case !x.OK:
			case x.Due.Before(stormStart):
				before = append(before, x.Lat)
			case x.Due.Before(stormEnd):
				during = append(during, x.Lat)
			}
		}
	}
	rep.LiveBefore, rep.LiveDuring = Summarize(before), Summarize(during)
	rep.LiveErrors, rep.LiveSamples = lr.Errors, lr.ErrorSamples
	return rep, nil
}

// stormSources returns loopback source addresses for n connections to
// addr, at most 100 on each (up to 250 addresses), or nil when addr is not
// a loopback IPv4 address.
func stormSources(addr string, n int) []string {
	if SourceAddrsFor(addr, PortsPerSource+1) == nil { // not loopback IPv4
		return nil
	}
	k := min((n+99)/100, 250)
	out := make([]string, k)
	for i := range out {
		out[i] = fmt.Sprintf("127.0.0.%d", i+1)
	}
	return out
}

// stormConnect connects every gateway at once; each one refused or timed
// out tries again after a backoff until patience has passed. It returns
// the connections (nil for one that never connected), the connect times
// (first attempt to CONNACK) and when the last one connected.
func stormConnect(ctx context.Context, addr string, gws []Gateway, patience time.Duration, rep *StormReport, progress func(string, ...any)) ([]*idleConn, []time.Duration, time.Time) {
	conns := make([]*idleConn, len(gws))
	lat := make([]time.Duration, len(gws))
	var (
		mu        sync.Mutex
		connected atomic.Int64
		last      time.Time
	)
	stop := everyTwoSeconds(func() { progress("storm: %d of %d connected", connected.Load(), len(gws)) })
	defer stop()
	start := time.Now()
	giveUp := start.Add(patience)
	var wg sync.WaitGroup
	for i, g := range gws {
		wg.Go(func() {
			for attempt := 0; ; attempt++ {
				if attempt > 0 && !sleepCtx(ctx, backoff(attempt)) {
					return
				}
				dctx, cancel := context.WithDeadline(ctx, giveUp)
				c, err := dialIdle(dctx, addr, g)
				cancel()
				mu.Lock()
				rep.StormAttempts++
				if err == nil {
					conns[i], lat[i] = c, time.Since(start)
					last = time.Now()
					mu.Unlock()
					connected.Add(1)
					return
				}
				rep.StormErrors[connErrorKind(err)]++
				mu.Unlock()
				if time.Now().After(giveUp) || ctx.Err() != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	out := lat[:0]
	for i, c := range conns {
		if c != nil {
			rep.StormConnected++
			out = append(out, lat[i])
		} else {
			rep.StormFailed++
		}
	}
	if last.IsZero() {
		last = time.Now()
	}
	return conns, out, last
}

// WriteTable writes the report as text.
func (rep *StormReport) WriteTable(w io.Writer) {
	rep.writeHead(w)
	fmt.Fprintf(w, "mode:     storm: %d gateways connect at once to %s while %d live gateways publish %g/s in all (the server is its own process,\n", rep.Storm, rep.Addr, rep.Live, rep.Rate)
	fmt.Fprintf(w, "          the live gateways another, %d, than the storm's)\n\n", rep.LivePID)
	row := func(label string, l LatencySummary) {
		fmt.Fprintf(w, "%-22s %6d publishes, p50 %s, p99 %s, max %s\n", label, l.Count, fmtMs(l.P50Ms), fmtMs(l.P99Ms), fmtMs(l.MaxMs))
	}
	row("live before the storm:", rep.LiveBefore)
	row("live during the storm:", rep.LiveDuring)
	fmt.Fprintf(w, "live errors:           %d\n", rep.LiveErrors)
	for _, s := range rep.LiveSamples {
		fmt.Fprintf(w, "  %s\n", s)
	}
	fmt.Fprintf(w, "storm:                 %d of %d connected (%d failed) in %.1fs, %d attempts%s\n", rep.StormConnected, rep.Storm, rep.StormFailed, rep.StormSeconds, rep.StormAttempts, fmtErrors(rep.StormErrors))
	fmt.Fprintf(w, "storm connect time:    p50 %s, p99 %s, max %s (first attempt to CONNACK)\n", fmtMs(rep.StormConnect.P50Ms), fmtMs(rep.StormConnect.P99Ms), fmtMs(rep.StormConnect.MaxMs))
	refused := map[string]int64{}
	for k, v := range rep.ServerAfter.Refused {
		if d := int64(v - rep.ServerBefore.Refused[k]); d > 0 {
			refused[k] = d
		}
	}
	fmt.Fprintf(w, "server:                %.0f handshakes, refusals%s\n", rep.ServerAfter.Handshakes-rep.ServerBefore.Handshakes, orNone(fmtErrors(refused)))
	if p := rep.Provision; p != nil {
		fmt.Fprintf(w, "\ngateways: %d reused from the cache, %d enrolled (%.1fs)\n", p.Reused, p.Enrolled, p.Seconds)
	}
}

func orNone(s string) string {
	if s == "" {
		return ": none"
	}
	return s
}
