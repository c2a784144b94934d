package bench

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/pki"
)

// Tenant is the tenant Measure provisions its gateways in.
const Tenant = "bench"

// Serials returns the serials of n bench gateways.
func Serials(n int) []string { return TenantSerials(Tenant, n) }

// TenantSerials returns the serials of n bench gateways of tenant: a series
// of its own (three characters from a hash of the tenant's name; "BNC" for
// the tenant "bench"), so that benches of several tenants on one server do
// not ask for each other's serials (a serial belongs to one tenant).
func TenantSerials(tenant string, n int) []string {
	code := "BNC"
	if tenant != Tenant {
		h := fnv.New32a()
		h.Write([]byte(tenant))
		v := h.Sum32()
		const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
		b := []byte{digits[v%36], digits[v/36%36], digits[v/1296%36]}
		code = string(b)
	}
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf("TSGW06%s%08d", code, i)
	}
	return s
}

// Options say what Measure measures besides the load (Config): iotransit in
// process, then a peer broker with the same load, or iotransit's
// forwarding.
type Options struct {
	// Gateways is how many gateways publish, each with its own connection,
	// serial and certificate.
	Gateways int
	// Fsync is iotransit's durability level, node.FsyncDefault or
	// node.FsyncAlways.
	Fsync string
	// TmpDir is where the node's temporary data directory goes ("": the
	// system's).
	TmpDir string
	// Log takes the node's log; its warnings and errors are counted in the
	// report.
	Log slog.Handler
	// Peer is a broker measured afterwards with the same load: "mosquitto",
	// or "" for none.
	Peer string
	// Forward, when "webhook", measures forwarding to an HTTPS receiver in
	// this process instead: a steady phase at the Config's Rate (open
	// loop), then a throughput phase (closed loop).
	Forward string
	// ForwardBatch and ForwardWait are the integration's batching: its
	// batch.maxMessages and batch.maxWait.
	ForwardBatch int
	ForwardWait  time.Duration
	// ForwardConcurrency is the integration's delivery.concurrency (its
	// lanes; 0: the server's default).
	ForwardConcurrency int
}

// Measure runs what o asks with the load cfg, adds a result per measured
// system (or forward phase) to rep, and iotransit's ratio to the peer. It
// returns the problems that fail the run (a message acknowledged but not
// stored or not forwarded, a peer that failed) apart from the error that
// stopped it.
func Measure(ctx context.Context, rep *Report, o Options, cfg Config) (failures []error, err error) {
	if cfg.Progress == nil {
		cfg.Progress = func(string, ...any) {}
	}
	if o.Forward != "" {
		if rep.Results, failures, err = measureForward(ctx, o, cfg); err != nil {
			return nil, err
		}
	} else {
		it, err := measureIngest(ctx, o, cfg)
		if err != nil {
			return nil, err
		}
		rep.Results = append(rep.Results, it)
	}
	for _, r := range rep.Results {
		if r.Stored != nil && !r.Stored.OK {
			failures = append(failures, fmt.Errorf("DURABILITY: iotransit acknowledged %d messages but stored %d", r.Stored.Acked, r.Stored.Stored))
		}
	}
	if o.Peer == "" || ctx.Err() != nil {
		return failures, nil
	}
	p, err := measureMosquitto(ctx, o, cfg)
	if err != nil {
		failures = append(failures, err)
		p = &SystemReport{Name: "mosquitto", Skipped: "failed: " + err.Error()}
	}
	rep.Results = append(rep.Results, p)
	if it := rep.Results[0]; p.Result != nil && p.Acked > 0 && it.Result != nil && it.Acked > 0 {
		rep.Ratio = &Ratio{
			Peer:       p.Name,
			Throughput: it.PublishesPerSecond / p.PublishesPerSecond,
			P50:        it.Latency.P50Ms / p.Latency.P50Ms,
			P99:        it.Latency.P99Ms / p.Latency.P99Ms,
		}
	}
	return failures, nil
}

// measureIngest starts an in-process node in a temporary directory,
// provisions the gateways, runs the load and checks that every
// acknowledged message was stored.
func measureIngest(ctx context.Context, o Options, cfg Config) (*SystemReport, error) {
	bn, err := startNode(ctx, o, cfg.Progress)
	if err != nil {
		return nil, err
	}
	defer bn.close()
	n, counter := bn.n, bn.counter

	rep := &SystemReport{Name: "iotransit", Fsync: o.Fsync, LoadAvg: loadAvg()}
	res, err := Run(ctx, Target{Name: "iotransit", Addr: n.MQTTAddr(), Gateways: bn.gws}, cfg)
	if err != nil {
		return nil, err
	}
	rep.Result = res
	if rep.Stored, err = checkStored(ctx, n, res.TotalMessagesAcked); err != nil {
		return nil, err
	}
	logs := counter.Counts()
	rep.ServerLog = &logs
	if !rep.Stored.OK {
		cfg.Progress("!!! DURABILITY BUG: %d messages acknowledged, only %d stored !!!", rep.Stored.Acked, rep.Stored.Stored)
	}
	return rep, nil
}

// benchNode is an in-process node in a temporary directory with the bench
// gateways provisioned.
type benchNode struct {
	n       *node.Node
	counter *LogCounter
	gws     []Gateway
	close   func()
}

// startNode starts a development node (loopback integration targets
// allowed) without the per-gateway rate limit and provisions the gateways.
func startNode(ctx context.Context, o Options, progress func(string, ...any)) (_ *benchNode, err error) {
	dir, err := os.MkdirTemp(o.TmpDir, "iotransit-bench-")
	if err != nil {
		return nil, fmt.Errorf("bench: data directory: %w", err)
	}
	counter := NewLogCounter(o.Log)
	ncfg := node.Config{
		DataDir: dir, MQTTAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Dev: true,
		Fsync: o.Fsync, Logger: slog.New(counter),
	}
	// The per-gateway rate limit would throttle the load: lift it.
	ncfg.Ingest.MsgRate, ncfg.Ingest.MsgBurst = 1e9, 1e6
	progress("starting iotransit (fsync %s) in %s", o.Fsync, dir)
	n, err := node.Start(ctx, ncfg)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: start node: %w", err)
	}
	bn := &benchNode{n: n, counter: counter, close: func() { n.Close(); _ = os.RemoveAll(dir) }}
	defer func() {
		if err != nil {
			bn.close()
		}
	}()
	start := time.Now()
	if bn.gws, err = provision(ctx, n, Serials(o.Gateways)); err != nil {
		return nil, err
	}
	progress("provisioned %d gateways in tenant %s in %s", len(bn.gws), Tenant, time.Since(start).Round(time.Millisecond))
	return bn, nil
}

// provision registers the gateways in the bench tenant and issues each a
// certificate from a CSR, as a factory would.
func provision(ctx context.Context, n *node.Node, serials []string) ([]Gateway, error) {
	if _, err := n.CreateTenant(ctx, Tenant); err != nil {
		return nil, fmt.Errorf("bench: create tenant %s: %w", Tenant, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(n.ServerCAPEM()) {
		return nil, errors.New("bench: no server CA")
	}
	gws := make([]Gateway, len(serials))
	errs := make([]error, len(serials))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, serial := range serials {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			cert, err := enroll(ctx, n, serial)
			if err != nil {
				errs[i] = fmt.Errorf("bench: provision %s: %w", serial, err)
				return
			}
			gws[i] = Gateway{Serial: serial, TLS: &tls.Config{
				MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*cert},
				RootCAs: pool, ServerName: "127.0.0.1",
			}}
		})
	}
	wg.Wait()
	return gws, errors.Join(errs...)
}

func enroll(ctx context.Context, n *node.Node, serial string) (*tls.Certificate, error) {
	if _, err := n.Registry().RegisterGateway(ctx, Tenant, serial); err != nil {
		return nil, err
	}
	return pki.NewKeyPair(serial, func(_ crypto.Signer, csr []byte) ([]byte, error) {
		certPEM, _, err := n.Registry().IssueCertificate(ctx, Tenant, serial, csr, 24*time.Hour)
		return certPEM, err
	})
}

// checkStored compares the bench tenant's message stream with the Thingsee
// messages acknowledged since the node started.
func checkStored(ctx context.Context, n *node.Node, acked int64) (*StoredCheck, error) {
	name := names.MessageStream(Tenant)
	st, err := n.JetStream().Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("bench: stream %s: %w", name, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("bench: stream %s info: %w", name, err)
	}
	c := &StoredCheck{Stream: name, Stored: info.State.Msgs, Acked: acked}
	c.OK = c.Stored >= uint64(max(c.Acked, 0))
	mfs, err := n.Metrics().Gather()
	if err != nil {
		return nil, fmt.Errorf("bench: gather metrics: %w", err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "iotransit_ingest_messages_total":
				for _, l := range m.GetLabel() {
					if l.GetName() == "outcome" && l.GetValue() == "duplicate" {
						c.Duplicates += m.GetCounter().GetValue()
					}
					if l.GetName() == "outcome" && l.GetValue() == "rejected" {
						c.Rejected += m.GetCounter().GetValue()
					}
				}
			case "iotransit_ingest_publishes_refused_total":
				c.Refused += m.GetCounter().GetValue()
			}
		}
	}
	return c, nil
}

// measureMosquitto runs the same load against a mosquitto broker, or
// reports it skipped when mosquitto is not installed.
func measureMosquitto(ctx context.Context, o Options, cfg Config) (*SystemReport, error) {
	if o.Peer != "mosquitto" {
		return nil, fmt.Errorf("bench: unknown peer %q: the only peer is mosquitto", o.Peer)
	}
	progress := cfg.Progress
	if _, err := MosquittoBinary(); err != nil {
		progress("mosquitto not found: peer skipped (%v)", err)
		return &SystemReport{Name: "mosquitto", Skipped: "mosquitto binary not found"}, nil
	}
	m, err := StartMosquitto(ctx, Serials(o.Gateways))
	if err != nil {
		return nil, err
	}
	defer m.Close()
	progress("started %s on %s", m.Version, m.Addr())
	rep := &SystemReport{Name: "mosquitto", Version: m.Version, LoadAvg: loadAvg()}
	res, err := Run(ctx, m.Target(), cfg)
	if err != nil {
		return nil, fmt.Errorf("%w\nmosquitto log:\n%s", err, m.Log())
	}
	rep.Result = res
	select {
	case <-m.Exited():
		return nil, fmt.Errorf("bench: mosquitto exited during the run:\n%s", m.Log())
	default:
	}
	if l := strings.TrimSpace(m.Log()); l != "" {
		progress("mosquitto log:\n%s", l)
	}
	return rep, nil
}

// forwardDrainLimit is how long a forward phase waits after its load for
// the acknowledged messages still on their way to arrive.
const forwardDrainLimit = 30 * time.Second

// forwardPhase is one measurement of the forward benchmark.
type forwardPhase struct {
	name string
	// rate is the open-loop rate; 0 runs a closed loop.
	rate float64
}

// measureForward measures forwarding: an in-process node forwards every
// message the gateways publish to a webhook receiver in this process,
// first at the steady cfg.Rate (open loop), then as fast as the gateways
// publish (closed loop), each phase through its own integration. It
// returns a report per phase and the problems that make the run fail.
func measureForward(ctx context.Context, o Options, cfg Config) ([]*SystemReport, []error, error) {
	if o.Forward != client.IntegrationWebhook {
		return nil, nil, fmt.Errorf("bench: forward %q: the only forwarding measured is webhook", o.Forward)
	}
	bn, err := startNode(ctx, o, cfg.Progress)
	if err != nil {
		return nil, nil, err
	}
	defer bn.close()
	recv, err := StartWebhookReceiver("")
	if err != nil {
		return nil, nil, err
	}
	defer recv.Close()
	api, err := client.New(client.Config{Server: bn.n.APIAddr(), CAPEM: bn.n.ServerCAPEM(), Credential: bn.n.OperatorKey()})
	if err != nil {
		return nil, nil, err
	}
	defer api.Close()

	var reports []*SystemReport
	var failures []error
	var acked int64 // Thingsee messages acknowledged since the node started
	for _, ph := range []forwardPhase{{"steady", cfg.Rate}, {"throughput", 0}} {
		if ctx.Err() != nil {
			break
		}
		rep, errs, err := runForwardPhase(ctx, o, cfg, bn, recv, api, ph, &acked)
		if err != nil {
			return nil, nil, fmt.Errorf("bench: forward %s phase: %w", ph.name, err)
		}
		reports = append(reports, rep)
		failures = append(failures, errs...)
	}
	if n := recv.Stray(); n > 0 {
		failures = append(failures, fmt.Errorf("FORWARD: the receiver got %d requests on no integration's path", n))
	}
	return reports, failures, nil
}

// runForwardPhase creates a webhook integration to the receiver, runs the
// phase's load, waits up to forwardDrainLimit for the rest to arrive and
// deletes the integration again.
func runForwardPhase(ctx context.Context, o Options, cfg Config, bn *benchNode, recv *WebhookReceiver,
	api *client.Client, ph forwardPhase, acked *int64) (*SystemReport, []error, error) {
	progress := cfg.Progress
	trace := NewForwardTrace(len(bn.gws), cfg.Payload.Messages())
	path := "/hook/" + ph.name
	integ, err := createForwardWebhook(ctx, api, Tenant, o, "bench-"+ph.name, recv.URL(path), recv.CAPEM)
	if err != nil {
		return nil, nil, err
	}
	if err := recv.Route(path, trace, integ.Secret); err != nil {
		return nil, nil, err
	}
	progress("%s: webhook integration %s to %s, batches of at most %d messages or %s, %d lanes", ph.name, integ.ID, recv.URL(path), o.ForwardBatch, o.ForwardWait, integ.Concurrency)
	logsBefore := bn.counter.Counts()

	// A run's payloads are made of its publish numbers, which start at 0
	// each run, and of the second of the publish (tsmTs): a message of this
	// phase repeating one of the previous phase's last second would be
	// stored once, as a duplicate. Start in a new second.
	if !sleepUntil(ctx, time.Now().Truncate(time.Second).Add(time.Second)) {
		return nil, nil, ctx.Err()
	}
	cfg.Rate, cfg.Tracker = ph.rate, trace
	rep := &SystemReport{Name: "iotransit", Fsync: o.Fsync, LoadAvg: loadAvg()}
	res, err := Run(ctx, Target{Name: "iotransit", Addr: bn.n.MQTTAddr(), Gateways: bn.gws}, cfg)
	if err != nil {
		return nil, nil, err
	}
	rep.Result = res
	fr, failures := awaitForward(ctx, api, Tenant, integ, trace, res, o, ph, progress)
	rep.Forward = fr
	*acked += res.TotalMessagesAcked
	if rep.Stored, err = checkStored(ctx, bn.n, *acked); err != nil {
		return nil, nil, err
	}
	logs := bn.counter.Counts().Since(logsBefore)
	rep.ServerLog = &logs
	return rep, failures, nil
}

// deleteForwardWebhook deletes the integration of a forward phase, even
// once ctx has ended (an interrupted run): left behind, it would go on
// forwarding to a receiver that is gone, retrying and dead-lettering.
func deleteForwardWebhook(ctx context.Context, api *client.Client, tenant, id string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return api.DeleteIntegration(ctx, tenant, id)
}

// awaitForward ends a forward phase after its load (res): it waits up to
// forwardDrainLimit for every acknowledged message to arrive, summarises
// the trace with the integration's state (read through api in tenant)
// after the load and after the wait, deletes the integration, and returns
// the result with the problems that fail the run.
func awaitForward(ctx context.Context, api *client.Client, tenant string, integ forwardWebhook, trace *ForwardTrace,
	res *Result, o Options, ph forwardPhase, progress func(string, ...any)) (*ForwardResult, []error) {
	var failures []error
	atEnd, err := ReadIntegration(ctx, api, tenant, integ.ID)
	if err != nil {
		failures = append(failures, err)
	}
	if atEnd != nil {
		progress("%s: load done; the integration's backlog is %d messages; waiting up to %s for every acknowledged message to arrive", ph.name, atEnd.Backlog, forwardDrainLimit)
	}
	drained, waited := trace.WaitDelivered(ctx, forwardDrainLimit)
	// The node acknowledges a batch and saves the integration's state after
	// the receiver answered: give it a moment to show everything delivered.
	var after *IntegrationStatus
	for settle := time.Now().Add(2 * time.Second); ; {
		arrived, _ := trace.Progress()
		if after, err = ReadIntegration(ctx, api, tenant, integ.ID); err != nil {
			failures = append(failures, err)
			break
		}
		if !drained || after.Backlog == 0 && after.State.Delivered >= uint64(arrived) || time.Now().After(settle) {
			break
		}
		if !sleepUntil(ctx, time.Now().Add(50*time.Millisecond)) {
			break
		}
	}
	fr := trace.Result(res.WindowStart, res.WindowEnd)
	fr.Phase, fr.Type, fr.BatchMaxMessages, fr.BatchMaxWait = ph.name, o.Forward, o.ForwardBatch, o.ForwardWait.String()
	fr.Concurrency = integ.Concurrency
	fr.WaitedSeconds, fr.Drained, fr.AtLoadEnd, fr.AfterWait = waited.Seconds(), drained, atEnd, after
	if err := deleteForwardWebhook(ctx, api, tenant, integ.ID); err != nil {
		failures = append(failures, err)
	}

	// What makes the run fail, said loudly.
	fail := func(format string, a ...any) {
		err := fmt.Errorf("FORWARD %s: "+format, append([]any{ph.name}, a...)...)
		progress("!!! %v !!!", err)
		failures = append(failures, err)
	}
	var backlog, dead uint64
	if after != nil {
		backlog, dead = after.Backlog, after.DeadLetters
	}
	switch {
	case fr.Missing == 0:
	case ph.rate > 0:
		fail("%d of %d acknowledged messages did not arrive within %s after the load (backlog %d, dead letters %d)",
			fr.Missing, fr.Acked, forwardDrainLimit, backlog, dead)
	case uint64(fr.Missing) > backlog:
		fail("%d acknowledged messages did not arrive within %s after the load and only %d are in the backlog (dead letters %d)",
			fr.Missing, forwardDrainLimit, backlog, dead)
	default:
		progress("%s: %d messages still in the backlog %s after the load: forwarding is slower than ingest", ph.name, fr.Missing, forwardDrainLimit)
	}
	if fr.SignatureFailures > 0 {
		fail("%d requests failed the Standard Webhooks signature check", fr.SignatureFailures)
	}
	if fr.OrderViolations > 0 {
		fail("%d messages of %d devices arrived out of their device's order", fr.OrderViolations, fr.DevicesOutOfOrder)
	}
	if fr.Unknown > 0 || fr.BadRequests > 0 {
		fail("%d received messages match no publish and %d requests were not a JSON array", fr.Unknown, fr.BadRequests)
	}
	if fr.Duplicates > 0 {
		progress("%s: %d duplicate deliveries (at-least-once redelivery)", ph.name, fr.Duplicates)
	}
	return fr, failures
}
