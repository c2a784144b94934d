package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/iotransit/iotransit/client"
)

// The external bench: a server running in another process, measured from
// outside, with the same client load against a mosquitto process in the
// same run. Nothing of the server is read but its public API, its MQTT
// listener and, with its process id, /proc.

// ExternalOptions say which server MeasureExternal measures and how its
// gateways are provisioned.
type ExternalOptions struct {
	// MQTTAddr is the server's MQTT listener, host:port.
	MQTTAddr string
	// APIURL is the server's management API, https://host:port.
	APIURL string
	// CAPEM verifies the server's certificates (MQTT and API).
	CAPEM []byte
	// OperatorKey is the API credential; it creates the tenant.
	OperatorKey string
	// Tenant holds the bench gateways. It should be the bench's own: the
	// stored check counts every message the tenant stores during the run.
	Tenant string
	// Gateways is how many gateways publish, each with its own connection.
	Gateways int
	// ServerPID is the server's process id (0: unknown): its CPU time and
	// memory are then measured.
	ServerPID int
	// SourceAddrs are the local addresses the connections are spread over
	// (nil: SourceAddrsFor the server's address).
	SourceAddrs []string
	// CacheDir keeps the gateways' keys and certificates between runs
	// ("": none; see ProvisionAPI).
	CacheDir string
	// Peer is a broker measured afterwards with the same load: "mosquitto",
	// or "" for none.
	Peer string

	// storedHook, in tests, changes the newest stored sequence numbers
	// read before and after the run: a check that cannot fail checks
	// nothing.
	storedHook func(before, after uint64) (uint64, uint64)
}

// Percentiles are latency percentiles in milliseconds.
type Percentiles struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
}

// ExternalSystem is one server measured from outside.
type ExternalSystem struct {
	System  string `json:"system"`
	Version string `json:"version,omitempty"`
	Addr    string `json:"addr,omitempty"`
	// Skipped says why the system was not measured.
	Skipped string `json:"skipped,omitempty"`
	// Throughput is acknowledged publishes (MQTT messages) per second of
	// the measured window.
	Throughput float64 `json:"throughput"`
	// Latency is publish (or, open loop, due time) to PUBACK.
	Latency Percentiles `json:"latency"`
	// Errors are counted by kind, the warmup included.
	Errors Errors `json:"errors"`
	// ServerCPUPerMessageUs is the server's CPU time (user + system) in
	// the measured window per acknowledged publish, in microseconds;
	// ServerCPUCores the same time per second. Both need the server's
	// process id (and Linux).
	ServerCPUPerMessageUs *float64 `json:"serverCpuPerMessageUs,omitempty"`
	ServerCPUCores        *float64 `json:"serverCpuCores,omitempty"`
	// ServerRSSBytes is the largest VmRSS of the server's process sampled
	// during the run (warmup included).
	ServerRSSBytes int64 `json:"serverRssBytes,omitempty"`
	// BenchCPUCores is the load generator's own CPU (this process), and
	// OthersCPUCores every other process of the machine, in the measured
	// window: the bench and the server share the machine.
	BenchCPUCores  *float64 `json:"benchCpuCores,omitempty"`
	OthersCPUCores *float64 `json:"othersCpuCores,omitempty"`
	// LoadAvg is /proc/loadavg (1, 5, 15 minutes) just before the run.
	LoadAvg string `json:"loadAvgBefore,omitempty"`
	// Stored is the independent durability check (iotransit only).
	Stored *ExternalStored `json:"stored,omitempty"`
	// Provision says how the gateways got their certificates (iotransit).
	Provision *ProvisionStats `json:"provision,omitempty"`
	// Run is the whole measurement.
	Run *Result `json:"run,omitempty"`
}

// ExternalStored checks the bench's count against the server's message
// stream, read through the API: the newest stored message's sequence
// number before and after the run must have grown by at least the number
// of Thingsee messages acknowledged (a stream's sequence numbers are dense
// and only grow). More is possible (a publish stored after its client gave
// up waiting, or another publisher in the tenant); less is a durability
// bug.
type ExternalStored struct {
	Before uint64 `json:"before"`
	After  uint64 `json:"after"`
	Delta  uint64 `json:"delta"`
	Acked  int64  `json:"acked"`
	OK     bool   `json:"ok"`
}

// ExternalReport is the whole output of an external bench: the measured
// server at the top level, the peer beside it and the ratios.
type ExternalReport struct {
	Header
	ExternalSystem
	Peer  *ExternalSystem `json:"peer,omitempty"`
	Ratio *Ratio          `json:"ratio,omitempty"`
}

// PortsPerSource is how many connections SourceAddrsFor puts on one
// loopback source address: below the 28,232 ephemeral ports of Linux's
// default range (32768-60999), with room for what else runs.
const PortsPerSource = 20000

// SourceAddrsFor returns the loopback source addresses that n connections
// to addr need: nil (the system's choice) when one address has enough
// ports or addr is not a loopback IPv4 address, else 127.0.0.1,
// 127.0.0.2, ... (Linux routes all of 127/8 to the loopback interface).
func SourceAddrsFor(addr string, n int) []string {
	host, _, err := net.SplitHostPort(addr)
	ip := net.ParseIP(host)
	if host == "localhost" {
		ip = net.IPv4(127, 0, 0, 1)
	}
	if err != nil || n <= PortsPerSource || ip == nil || ip.To4() == nil || !ip.IsLoopback() {
		return nil
	}
	k := (n + PortsPerSource - 1) / PortsPerSource
	addrs := make([]string, k)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("127.0.0.%d", i+1)
	}
	return addrs
}

// SpreadSources gives the gateways' connections the source addresses in
// turn (none when addrs is empty).
func SpreadSources(gws []Gateway, addrs []string) error {
	if len(addrs) == 0 {
		return nil
	}
	ips := make([]net.IP, len(addrs))
	for i, a := range addrs {
		if ips[i] = net.ParseIP(a); ips[i] == nil {
			return fmt.Errorf("bench: source address %q is not an IP address", a)
		}
	}
	for i := range gws {
		gws[i].LocalAddr = &net.TCPAddr{IP: ips[i%len(ips)]}
	}
	return nil
}

// MeasureExternal provisions the gateways through the API, runs the load
// of cfg against the server, checks the stored count, then (o.Peer) runs
// the same load against a mosquitto process and computes the ratios. It
// returns the report, the problems that fail the run (DURABILITY, a peer
// that failed) and the error that stopped it.
func MeasureExternal(ctx context.Context, h Header, o ExternalOptions, cfg Config) (*ExternalReport, []error, error) {
	if err := cfg.defaults(); err != nil {
		return nil, nil, err
	}
	x, err := provisionExternal(ctx, o, cfg)
	if err != nil {
		return nil, nil, err
	}
	defer x.api.Close()
	rep := &ExternalReport{Header: h}
	it, failures, err := x.measure(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	rep.ExternalSystem = *it
	if o.Peer == "" || ctx.Err() != nil {
		return rep, failures, nil
	}
	p, err := measureExternalPeer(ctx, x.o, cfg)
	if err != nil {
		failures = append(failures, err)
		p = &ExternalSystem{System: o.Peer, Skipped: "failed: " + err.Error()}
	}
	rep.Peer = p
	rep.Ratio = externalRatio(&rep.ExternalSystem, p)
	return rep, failures, nil
}

// externalServer is a server in another process with the bench's
// gateways provisioned through its API.
type externalServer struct {
	o    ExternalOptions
	api  *client.Client
	gws  []Gateway
	prov *ProvisionStats
}

// provisionExternal connects to the API of o's server (the caller closes
// x.api) and provisions o.Gateways gateways in o.Tenant, spread over the
// source addresses.
func provisionExternal(ctx context.Context, o ExternalOptions, cfg Config) (x *externalServer, err error) {
	if o.Gateways < 1 {
		return nil, fmt.Errorf("bench: %d gateways: want at least 1", o.Gateways)
	}
	if o.SourceAddrs == nil {
		o.SourceAddrs = SourceAddrsFor(o.MQTTAddr, o.Gateways)
	}
	if len(o.SourceAddrs) > 0 {
		cfg.Progress("spreading %d connections over the source addresses %s", o.Gateways, strings.Join(o.SourceAddrs, ", "))
	}
	host, _, err := net.SplitHostPort(o.MQTTAddr)
	if err != nil {
		return nil, fmt.Errorf("bench: MQTT address %q: %w", o.MQTTAddr, err)
	}
	api, rt, err := NewAPIClient(o.APIURL, o.CAPEM, o.OperatorKey)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer func() {
		if err != nil {
			api.Close()
		}
	}()
	cfg.Progress("provisioning %d gateways in tenant %s through %s", o.Gateways, o.Tenant, api.Server())
	gws, prov, err := ProvisionAPI(ctx, ProvisionConfig{API: api, Tenant: o.Tenant, Serials: TenantSerials(o.Tenant, o.Gateways),
		CacheDir: o.CacheDir, CAPEM: o.CAPEM, ServerName: host, Progress: cfg.Progress})
	if err != nil {
		return nil, err
	}
	cfg.Progress("provisioned in %.1fs: %d reused from the cache, %d enrolled, %d rate-limit waits", prov.Seconds, prov.Reused, prov.Enrolled, rt.Waits.Load())
	if err := SpreadSources(gws, o.SourceAddrs); err != nil {
		return nil, err
	}
	return &externalServer{o: o, api: api, gws: gws, prov: prov}, nil
}

// measure runs the load cfg against the server and checks its message
// stream against the acknowledged messages (ExternalStored); a failed
// check is returned as a DURABILITY problem.
func (x *externalServer) measure(ctx context.Context, cfg Config) (*ExternalSystem, []error, error) {
	o := x.o
	before, err := newestSeq(ctx, x.api, o.Tenant)
	if err != nil {
		return nil, nil, err
	}
	// The payloads are made of each gateway's publish number, which starts
	// at 0 every run, and of the second of the publish: start in a second
	// after every publish of an earlier run, so that none of this run is
	// taken for a resend of one (and stored once).
	if !sleepUntil(ctx, time.Now().Truncate(time.Second).Add(time.Second)) {
		return nil, nil, ctx.Err()
	}
	it, err := measureSystem(ctx, Target{Name: "iotransit", Addr: o.MQTTAddr, Gateways: x.gws, PID: o.ServerPID}, cfg)
	if err != nil {
		return nil, nil, err
	}
	after, err := newestSeq(ctx, x.api, o.Tenant)
	if err != nil {
		return nil, nil, err
	}
	if o.storedHook != nil {
		before, after = o.storedHook(before, after)
	}
	st := &ExternalStored{Before: before, After: after, Acked: it.Run.TotalMessagesAcked}
	if after > before {
		st.Delta = after - before
	}
	st.OK = st.Delta >= uint64(max(st.Acked, 0))
	it.Stored, it.Provision = st, x.prov
	var failures []error
	if !st.OK {
		err := fmt.Errorf("DURABILITY: iotransit acknowledged %d messages but its stream grew by %d (newest seq %d before, %d after)", st.Acked, st.Delta, st.Before, st.After)
		cfg.Progress("!!! %v !!!", err)
		failures = append(failures, err)
	}
	return it, failures, nil
}

// newestSeq returns the sequence number of the tenant's newest stored
// message, 0 when it has none.
func newestSeq(ctx context.Context, api *client.Client, tenant string) (uint64, error) {
	p, err := api.ListMessages(ctx, tenant, client.MessageQuery{Limit: 1})
	if err != nil {
		return 0, fmt.Errorf("bench: newest message of %s: %w", tenant, err)
	}
	if len(p.Items) == 0 {
		return 0, nil
	}
	return p.Items[0].Seq, nil
}

// measureExternalPeer runs the load against a mosquitto process started
// for it, with the same source addresses.
func measureExternalPeer(ctx context.Context, o ExternalOptions, cfg Config) (*ExternalSystem, error) {
	if o.Peer != "mosquitto" {
		return nil, fmt.Errorf("bench: unknown peer %q: the only peer is mosquitto", o.Peer)
	}
	if _, err := MosquittoBinary(); err != nil {
		cfg.Progress("mosquitto not found: peer skipped (%v)", err)
		return &ExternalSystem{System: "mosquitto", Skipped: "mosquitto binary not found"}, nil
	}
	m, err := StartMosquitto(ctx, TenantSerials(o.Tenant, o.Gateways))
	if err != nil {
		return nil, err
	}
	defer m.Close()
	cfg.Progress("started %s on %s (pid %d)", m.Version, m.Addr(), m.broker.PID())
	t := m.Target()
	if err := SpreadSources(t.Gateways, o.SourceAddrs); err != nil {
		return nil, err
	}
	s, err := measureSystem(ctx, t, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w\nmosquitto log:\n%s", err, m.Log())
	}
	select {
	case <-m.Exited():
		return nil, fmt.Errorf("bench: mosquitto exited during the run:\n%s", m.Log())
	default:
	}
	s.Version = m.Version
	return s, nil
}

// measureSystem runs the load against t, sampling its memory, and
// summarises the result.
func measureSystem(ctx context.Context, t Target, cfg Config) (*ExternalSystem, error) {
	s := &ExternalSystem{System: t.Name, Addr: t.Addr, LoadAvg: loadAvg()}
	stopRSS := sampleRSS(t.PID, 250*time.Millisecond)
	res, err := Run(ctx, t, cfg)
	s.ServerRSSBytes = stopRSS()
	if err != nil {
		return nil, err
	}
	s.Run = res
	s.Throughput = res.PublishesPerSecond
	s.Latency = Percentiles{P50: res.Latency.P50Ms, P90: res.Latency.P90Ms, P99: res.Latency.P99Ms, P999: res.Latency.P999Ms}
	s.Errors = res.Errors
	if c := res.CPU; c != nil {
		s.BenchCPUCores, s.OthersCPUCores = &c.Self, &c.Others
		if t.PID > 0 {
			s.ServerCPUCores = &c.Server
			if res.Acked > 0 {
				us := c.Server * res.DurationSeconds * 1e6 / float64(res.Acked)
				s.ServerCPUPerMessageUs = &us
			}
		}
	}
	return s, nil
}

// sampleRSS samples the VmRSS of pid every period until the returned
// function is called, which returns the largest (0 without a pid).
func sampleRSS(pid int, period time.Duration) (stop func() int64) {
	if pid <= 0 {
		return func() int64 { return 0 }
	}
	var (
		mu   sync.Mutex
		peak = readRSS(pid)
		done = make(chan struct{})
		wg   sync.WaitGroup
	)
	wg.Go(func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				v := readRSS(pid)
				mu.Lock()
				peak = max(peak, v)
				mu.Unlock()
			}
		}
	})
	return func() int64 {
		close(done)
		wg.Wait()
		return max(peak, readRSS(pid))
	}
}

// externalRatio is it divided by the peer, nil when either was not
// measured.
func externalRatio(it, p *ExternalSystem) *Ratio {
	if p == nil || p.Run == nil || it.Run == nil || p.Throughput <= 0 || it.Throughput <= 0 {
		return nil
	}
	r := &Ratio{Peer: p.System, Throughput: it.Throughput / p.Throughput}
	if p.Latency.P50 > 0 {
		r.P50 = it.Latency.P50 / p.Latency.P50
	}
	if p.Latency.P99 > 0 {
		r.P99 = it.Latency.P99 / p.Latency.P99
	}
	if it.ServerCPUPerMessageUs != nil && p.ServerCPUPerMessageUs != nil && *p.ServerCPUPerMessageUs > 0 {
		r.CPUPerMessage = *it.ServerCPUPerMessageUs / *p.ServerCPUPerMessageUs
	}
	return r
}

// WriteTable writes the report as a table, a column per measured server.
func (rep *ExternalReport) WriteTable(w io.Writer) {
	s := rep.Settings
	rep.writeHead(w)
	fmt.Fprintf(w, "mode:     %s: the server is its own process (pid %s), measured from outside\n", rep.Mode, s["server-pid"])
	fmt.Fprintf(w, "load:     %s\n\n", loadShape(s))
	systems := []*ExternalSystem{&rep.ExternalSystem}
	if rep.Peer != nil {
		systems = append(systems, rep.Peer)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(label string, f func(x *ExternalSystem) string) {
		fmt.Fprint(tw, label)
		for _, x := range systems {
			v := "-"
			if x.Run != nil || label == "system" {
				v = f(x)
			}
			fmt.Fprint(tw, "\t", v)
		}
		fmt.Fprintln(tw)
	}
	optional := func(v *float64, format string) string {
		if v == nil {
			return "n/a"
		}
		return fmt.Sprintf(format, *v)
	}
	row("system", func(x *ExternalSystem) string { return displayName(x.System, x.Version) })
	row("load avg before (1/5/15m)", func(x *ExternalSystem) string { return x.LoadAvg })
	row("throughput (acked publishes/s)", func(x *ExternalSystem) string { return fmt.Sprintf("%.0f", x.Throughput) })
	row("latency p50 / p90", func(x *ExternalSystem) string { return fmtMs(x.Latency.P50) + " / " + fmtMs(x.Latency.P90) })
	row("latency p99 / p99.9", func(x *ExternalSystem) string { return fmtMs(x.Latency.P99) + " / " + fmtMs(x.Latency.P999) })
	row("server CPU per publish", func(x *ExternalSystem) string { return optional(x.ServerCPUPerMessageUs, "%.1f µs") })
	row("server CPU cores", func(x *ExternalSystem) string { return optional(x.ServerCPUCores, "%.2f") })
	row("server RSS (max)", func(x *ExternalSystem) string {
		if x.ServerRSSBytes == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.1f MiB", float64(x.ServerRSSBytes)/(1<<20))
	})
	row("bench / others CPU cores", func(x *ExternalSystem) string {
		return optional(x.BenchCPUCores, "%.2f") + " / " + optional(x.OthersCPUCores, "%.2f")
	})
	row("errors", func(x *ExternalSystem) string { return x.Errors.String() })
	row("stored (stream delta ≥ acked)", func(x *ExternalSystem) string {
		c := x.Stored
		switch {
		case c == nil:
			return "n/a"
		case !c.OK:
			return fmt.Sprintf("!!! NO: %d stored < %d acked: DURABILITY BUG", c.Delta, c.Acked)
		default:
			return fmt.Sprintf("yes: %d stored, %d acked", c.Delta, c.Acked)
		}
	})
	_ = tw.Flush()
	for _, x := range systems {
		if x.Skipped != "" {
			fmt.Fprintf(w, "\n%s: skipped: %s\n", x.System, x.Skipped)
		}
		if x.Run != nil && len(x.Errors.Samples) > 0 {
			fmt.Fprintf(w, "\n%s errors, first ones:\n  %s\n", x.System, strings.Join(x.Errors.Samples, "\n  "))
		}
	}
	if p := rep.Provision; p != nil {
		fmt.Fprintf(w, "\ngateways: %d reused from the cache, %d enrolled (%.1fs)\n", p.Reused, p.Enrolled, p.Seconds)
	}
	if rt := rep.Ratio; rt != nil {
		fmt.Fprintf(w, "\niotransit / %s: throughput %.2f×, server CPU per publish %.2f×, p50 latency %.2f×, p99 latency %.2f×\n",
			rt.Peer, rt.Throughput, rt.CPUPerMessage, rt.P50, rt.P99)
	}
}
