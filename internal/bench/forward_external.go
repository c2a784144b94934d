package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/iotransit/iotransit/client"
)

// The external forward bench: a server in another process forwards what
// the bench's gateways publish, at a steady rate, to the bench's own HTTPS
// webhook receiver, through a webhook integration the bench creates with
// the API. The receiver's certificate is of a CA the bench makes; the
// server trusts it for this integration only (the integration's caPem),
// and reaches a loopback or private address only when it allows private
// targets (serve --dev or --allow-private-targets).

// ExternalForwardOptions say which server MeasureExternalForward measures
// and how it forwards.
type ExternalForwardOptions struct {
	// Server is the server and its gateways (Peer unused).
	Server ExternalOptions
	// Forward holds the integration's batching and lanes (ForwardBatch,
	// ForwardWait, ForwardConcurrency); its Forward is "webhook".
	Forward Options
	// ReceiverAddr is where the receiver listens, host:port, the host
	// being how the server reaches it ("": 127.0.0.1 on a free port).
	ReceiverAddr string
	// Outage, when positive, makes the receiver answer 503 for that long
	// from the load's start (and the less than a second before it, while
	// the load waits for a new second): every message must still arrive,
	// once the server retries.
	Outage time.Duration
}

// ExternalForwardReport is the whole output of an external forward bench:
// the ingest side as the external bench reports it (throughput, PUBACK
// latency, server CPU and memory, the stored check), and what arrived at
// the receiver.
type ExternalForwardReport struct {
	Header
	ExternalSystem
	// Receiver is the URL the integration delivered to.
	Receiver string         `json:"receiver"`
	Forward  *ForwardResult `json:"forward"`
}

// forwardIntegrationName names the bench's integration; one left behind by
// an interrupted run is deleted before the next.
const forwardIntegrationName = "bench-forward"

// MeasureExternalForward provisions the gateways, starts the receiver,
// creates the webhook integration to it, runs the open-loop load of cfg
// (cfg.Rate must be positive), waits for every acknowledged message to
// arrive, and reports. The problems that fail the run are returned apart:
// a message acknowledged but not stored or not delivered, a device's
// messages out of order, a signature that does not verify.
func MeasureExternalForward(ctx context.Context, h Header, o ExternalForwardOptions, cfg Config) (*ExternalForwardReport, []error, error) {
	if err := cfg.defaults(); err != nil {
		return nil, nil, err
	}
	if cfg.Rate <= 0 {
		return nil, nil, errors.New("bench: the forward bench needs a rate: a steady load")
	}
	o.Forward.Forward = client.IntegrationWebhook
	x, err := provisionExternal(ctx, o.Server, cfg)
	if err != nil {
		return nil, nil, err
	}
	defer x.api.Close()
	tenant := x.o.Tenant
	recv, err := StartWebhookReceiver(o.ReceiverAddr)
	if err != nil {
		return nil, nil, err
	}
	defer recv.Close()
	if err := deleteIntegrations(ctx, x.api, tenant, forwardIntegrationName); err != nil {
		return nil, nil, err
	}
	ph := forwardPhase{name: "steady", rate: cfg.Rate}
	const path = "/hook/steady"
	trace := NewForwardTrace(len(x.gws), cfg.Payload.Messages())
	integ, err := createForwardWebhook(ctx, x.api, tenant, o.Forward, forwardIntegrationName, recv.URL(path), recv.CAPEM)
	if err != nil {
		return nil, nil, err
	}
	if err := recv.Route(path, trace, integ.Secret); err != nil {
		_ = deleteForwardWebhook(ctx, x.api, tenant, integ.ID)
		return nil, nil, err
	}
	cfg.Progress("webhook integration %s to %s, batches of at most %d messages or %s, %d lanes",
		integ.ID, recv.URL(path), o.Forward.ForwardBatch, o.Forward.ForwardWait, integ.Concurrency)
	if o.Outage > 0 {
		recv.Unavailable(o.Outage + time.Second) // measure waits for the next second
		cfg.Progress("the receiver answers 503 for the first %s", o.Outage)
	}
	cfg.Tracker = trace
	it, failures, err := x.measure(ctx, cfg)
	if err != nil {
		_ = deleteForwardWebhook(ctx, x.api, tenant, integ.ID)
		return nil, nil, err
	}
	fr, errs := awaitForward(ctx, x.api, tenant, integ, trace, it.Run, o.Forward, ph, cfg.Progress)
	failures = append(failures, errs...)
	if n := recv.Stray(); n > 0 {
		failures = append(failures, fmt.Errorf("FORWARD: the receiver got %d requests on no integration's path", n))
	}
	// The receiver's count against the stream's: every distinct message
	// that arrived was stored (the stream grew by at least as many).
	if st := it.Stored; st != nil && uint64(fr.Arrived) > st.Delta && st.OK {
		failures = append(failures, fmt.Errorf("FORWARD: %d distinct messages arrived but the stream grew by only %d", fr.Arrived, st.Delta))
	}
	return &ExternalForwardReport{Header: h, ExternalSystem: *it, Receiver: recv.URL(path), Forward: fr}, failures, nil
}

// deleteIntegrations deletes tenant's integrations called name.
func deleteIntegrations(ctx context.Context, api *client.Client, tenant, name string) error {
	list, err := api.ListIntegrations(ctx, tenant)
	if err != nil {
		return fmt.Errorf("bench: list integrations of %s: %w", tenant, err)
	}
	for _, v := range list {
		if v.Name != name {
			continue
		}
		if err := api.DeleteIntegration(ctx, tenant, v.ID); err != nil {
			return fmt.Errorf("bench: delete the integration %s left by an earlier run: %w", v.ID, err)
		}
	}
	return nil
}

// WriteTable writes the report as text.
func (rep *ExternalForwardReport) WriteTable(w io.Writer) {
	s, fr := rep.Settings, rep.Forward
	rep.writeHead(w)
	fmt.Fprintf(w, "mode:     %s forward: the server is its own process (pid %s), measured from outside; it forwards to\n", rep.Mode, s["server-pid"])
	fmt.Fprintf(w, "          the bench's receiver %s (webhook, batches of at most %s messages or %s, %d lanes)\n", rep.Receiver, s["forward-batch"], s["forward-wait"], fr.Concurrency)
	fmt.Fprintf(w, "load:     %s\n", loadShape(s))
	fmt.Fprintf(w, "note:     e2e latency is from the publish (payload handed to the MQTT client) to the receipt of\n")
	fmt.Fprintf(w, "          the whole webhook request, of the publishes of the measured window.\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(label, format string, a ...any) { fmt.Fprintf(tw, label+"\t"+format+"\n", a...) }
	optional := func(v *float64, format string) string {
		if v == nil {
			return "n/a"
		}
		return fmt.Sprintf(format, *v)
	}
	row("load avg before (1/5/15m)", "%s", rep.LoadAvg)
	row("ingest: acked publishes/s", "%.0f", rep.Throughput)
	row("ingest: PUBACK latency p50 / p99", "%s / %s", fmtMs(rep.Latency.P50), fmtMs(rep.Latency.P99))
	row("forward: delivered messages/s", "%.0f", fr.DeliveredPerSecond)
	row("forward: batches, mean / max size", "%d, %.1f / %d", fr.Batches, fr.MeanBatch, fr.MaxBatch)
	row("e2e latency p50 / p90", "%s / %s", fmtMs(fr.E2E.P50Ms), fmtMs(fr.E2E.P90Ms))
	row("e2e latency p99 / p99.9", "%s / %s", fmtMs(fr.E2E.P99Ms), fmtMs(fr.E2E.P999Ms))
	row("  of it tsmCloudTs→receiver p50 / p99", "%s / %s", fmtMs(fr.CloudToReceiver.P50Ms), fmtMs(fr.CloudToReceiver.P99Ms))
	backlog := "n/a"
	if fr.AtLoadEnd != nil {
		backlog = fmt.Sprint(fr.AtLoadEnd.Backlog)
	}
	row("backlog at window end / API after the load", "%d / %s", fr.PendingAtWindowEnd, backlog)
	row("server CPU per publish / cores", "%s / %s", optional(rep.ServerCPUPerMessageUs, "%.1f µs"), optional(rep.ServerCPUCores, "%.2f"))
	rss := "n/a"
	if rep.ServerRSSBytes > 0 {
		rss = fmt.Sprintf("%.1f MiB", float64(rep.ServerRSSBytes)/(1<<20))
	}
	row("server RSS (max)", "%s", rss)
	row("bench / others CPU cores", "%s / %s", optional(rep.BenchCPUCores, "%.2f"), optional(rep.OthersCPUCores, "%.2f"))
	row("published / acked / arrived", "%d / %d / %d", fr.Published, fr.Acked, fr.Arrived)
	missing := fmt.Sprintf("0, after waiting %.1fs", fr.WaitedSeconds)
	if fr.Missing > 0 {
		missing = fmt.Sprintf("!!! %d, after waiting %.1fs !!!", fr.Missing, fr.WaitedSeconds)
	}
	row("missing (acked, not arrived)", "%s", missing)
	if st := rep.Stored; st != nil {
		ok := "yes"
		if !st.OK {
			ok = "!!! NO: DURABILITY BUG !!!"
		}
		row("stored (stream delta ≥ acked)", "%s: %d stored, %d acked", ok, st.Delta, st.Acked)
	}
	row("duplicates / retried batches", "%d / %d", fr.Duplicates, fr.RetriedBatches)
	row("order violations (devices)", "%s", fmtOrder(fr))
	row("receiver 503s (outage)", "%d", fr.Refused)
	row("signature failures / unknown / bad requests", "%d / %d / %d", fr.SignatureFailures, fr.Unknown, fr.BadRequests)
	if a := fr.AfterWait; a != nil {
		v := fmt.Sprintf("%d / %d", a.State.Failed, a.DeadLetters)
		if a.State.LastError != "" {
			v += " (last: " + a.State.LastError + ")"
		}
		row("API: failed attempts / dead letters", "%s", v)
	}
	row("ingest errors", "%s", rep.Errors.String())
	_ = tw.Flush()
	if len(fr.Samples) > 0 {
		fmt.Fprintf(w, "\nreceiver problems, first ones:\n  %s\n", strings.Join(fr.Samples, "\n  "))
	}
	if len(rep.Errors.Samples) > 0 {
		fmt.Fprintf(w, "\ningest errors, first ones:\n  %s\n", strings.Join(rep.Errors.Samples, "\n  "))
	}
	if p := rep.Provision; p != nil {
		fmt.Fprintf(w, "\ngateways: %d reused from the cache, %d enrolled (%.1fs)\n", p.Reused, p.Enrolled, p.Seconds)
	}
}
