package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/iotransit/iotransit/client"
)

// The forward benchmark: every message a run publishes is followed with a
// ForwardTrace (the run's Tracker) from the gateway's publish to its
// arrival at a WebhookReceiver, which the node under load forwards to.
// A message is recognised at the receiver by what the payload generator
// put in it: its tsmTuid names the gateway and the sensor, its tsmTs is the
// second of its publish and its lght is the gateway's publish number modulo
// 200000, which together pick one publish of the run.

// lghtModulus is how the payload generator folds the publish number into lght.
const lghtModulus = 200000

// ForwardTrace follows every message of one run from publish to receipt.
// It is the run's Config.Tracker and the receiver's sink. Safe for
// concurrent use.
type ForwardTrace struct {
	perPublish int
	gws        []*gwTrace

	mu sync.Mutex
	rc receiverCounts
}

// gwTrace is one gateway's publishes and their messages.
type gwTrace struct {
	mu   sync.Mutex
	pubs []pubTrace // by publish number
	msgs []msgTrace // by publish number × messages per publish + sensor
	// devices are the gateway's sensors (one tsmTuid each), by sensor
	// number: per-device order is checked on each message's first receipt.
	devices []deviceOrder
}

// deviceOrder is what a device's messages showed of their order.
//
// The order a device's messages must keep is the order the server stored
// them in, which the bench knows only in part: publishes in flight at once
// (open loop) leave the client in an order of its goroutines' choosing.
// But a publish handed to the client after another's PUBACK came back
// was stored after it. So message A arriving (first receipt) after a
// message B of the same device is out of order when B was published after
// A's acknowledgement.
type deviceOrder struct {
	// newest is the highest publish number of the device received so far
	// (-1: none): it was published last of all received, so it decides.
	newest int64
	// violations counts the messages received out of order.
	violations int64
}

// Publish states.
const (
	pubInFlight uint8 = iota
	pubAcked
	pubFailed
)

type pubTrace struct {
	at     time.Time // handed to the client
	answer time.Time // its answer came back to the client
	state  uint8
}

type msgTrace struct {
	first    time.Time     // first receipt
	cloudLag time.Duration // first receipt minus its tsmCloudTs
	n        uint32        // receipts
}

// receiverCounts are what the receiver saw, message identity aside.
type receiverCounts struct {
	requests     int64
	messages     int64
	batchIDs     map[string]int
	maxBatch     int
	sigFailures  int64
	badRequests  int64
	unknown      int64
	refusals     int64
	samples      []string
	lastArrival  time.Time
	firstArrival time.Time
}

// maxForwardSamples bounds ForwardResult.Samples.
const maxForwardSamples = 8

// NewForwardTrace returns the trace of a run of gateways gateways whose
// publishes carry perPublish Thingsee messages each.
func NewForwardTrace(gateways, perPublish int) *ForwardTrace {
	t := &ForwardTrace{perPublish: max(perPublish, 1), gws: make([]*gwTrace, gateways)}
	for i := range t.gws {
		t.gws[i] = &gwTrace{devices: make([]deviceOrder, t.perPublish)}
		for s := range t.gws[i].devices {
			t.gws[i].devices[s].newest = -1
		}
	}
	t.rc.batchIDs = map[string]int{}
	return t
}

// Published implements Tracker.
func (t *ForwardTrace) Published(g int, seq int64, at time.Time) {
	if g < 0 || g >= len(t.gws) || seq < 0 {
		return
	}
	gw := t.gws[g]
	gw.mu.Lock()
	defer gw.mu.Unlock()
	for int64(len(gw.pubs)) <= seq { // dense: one append, except if a number was skipped
		gw.pubs = append(gw.pubs, pubTrace{})
		gw.msgs = append(gw.msgs, make([]msgTrace, t.perPublish)...)
	}
	gw.pubs[seq] = pubTrace{at: at}
}

// Answered implements Tracker.
func (t *ForwardTrace) Answered(g int, seq int64, ok bool) {
	if g < 0 || g >= len(t.gws) {
		return
	}
	gw := t.gws[g]
	gw.mu.Lock()
	defer gw.mu.Unlock()
	if seq < 0 || seq >= int64(len(gw.pubs)) {
		return
	}
	gw.pubs[seq].answer = time.Now()
	if ok {
		gw.pubs[seq].state = pubAcked
	} else {
		gw.pubs[seq].state = pubFailed
	}
}

// refused records a request the receiver answered 503 (an outage).
func (t *ForwardTrace) refused() {
	t.mu.Lock()
	t.rc.refusals++
	t.mu.Unlock()
}

func (t *ForwardTrace) sample(format string, args ...any) {
	if len(t.rc.samples) < maxForwardSamples {
		t.rc.samples = append(t.rc.samples, fmt.Sprintf(format, args...))
	}
}

// forwardedMessage is what the receiver reads of each Thingsee object.
type forwardedMessage struct {
	Tuid    string      `json:"tsmTuid"`
	TsmID   *int        `json:"tsmId"`
	Ts      json.Number `json:"tsmTs"`
	CloudTs json.Number `json:"tsmCloudTs"`
	Lght    json.Number `json:"lght"`
}

// receive records one delivery (a webhook request) that arrived at at:
// the batch id, whether its signature verified (sigErr), and every message
// of body, a JSON array of Thingsee objects.
func (t *ForwardTrace) receive(at time.Time, batchID string, body []byte, sigErr error) {
	var msgs []forwardedMessage
	decodeErr := json.Unmarshal(body, &msgs)

	t.mu.Lock()
	t.rc.requests++
	if t.rc.firstArrival.IsZero() {
		t.rc.firstArrival = at
	}
	t.rc.lastArrival = at
	t.rc.batchIDs[batchID]++
	if sigErr != nil {
		t.rc.sigFailures++
		t.sample("signature of batch %s: %v", batchID, sigErr)
	}
	if decodeErr != nil {
		t.rc.badRequests++
		t.sample("batch %s is not a JSON array of objects: %v", batchID, decodeErr)
		t.mu.Unlock()
		return
	}
	t.rc.messages += int64(len(msgs))
	t.rc.maxBatch = max(t.rc.maxBatch, len(msgs))
	t.mu.Unlock()

	var unknown, disorder []string
	for _, m := range msgs {
		why, outOfOrder := t.arrive(at, m)
		switch {
		case why != "":
			unknown = append(unknown, why)
		case outOfOrder != "":
			disorder = append(disorder, outOfOrder)
		}
	}
	if len(unknown)+len(disorder) > 0 {
		t.mu.Lock()
		t.rc.unknown += int64(len(unknown))
		for _, u := range append(unknown, disorder...) {
			t.sample("batch %s: %s", batchID, u)
		}
		t.mu.Unlock()
	}
}

// arrive matches one received message with its publish and records its
// receipt; it returns why it could not, or, when this first receipt comes
// after that of a message of the same device published later, what was
// out of order.
func (t *ForwardTrace) arrive(at time.Time, m forwardedMessage) (unknown, outOfOrder string) {
	g, sensor, ok := parseBenchTuid(m.Tuid)
	ts, errTs := strconv.ParseInt(m.Ts.String(), 10, 64)
	lght, errL := strconv.ParseInt(m.Lght.String(), 10, 64)
	cloud, errC := strconv.ParseFloat(m.CloudTs.String(), 64)
	switch {
	case !ok || g >= len(t.gws) || sensor >= t.perPublish:
		return fmt.Sprintf("message of unknown sensor %q", m.Tuid), ""
	case m.TsmID == nil:
		return fmt.Sprintf("message of %s without tsmId", m.Tuid), ""
	case errTs != nil || errL != nil || lght < 0:
		return fmt.Sprintf("message of %s: tsmTs %q, lght %q", m.Tuid, m.Ts, m.Lght), ""
	case errC != nil:
		return fmt.Sprintf("message of %s: tsmCloudTs %q missing or not a number", m.Tuid, m.CloudTs), ""
	}
	gw := t.gws[g]
	gw.mu.Lock()
	defer gw.mu.Unlock()
	for seq := lght; seq < int64(len(gw.pubs)); seq += lghtModulus {
		if gw.pubs[seq].at.Unix() != ts {
			continue
		}
		mt := &gw.msgs[seq*int64(t.perPublish)+int64(sensor)]
		mt.n++
		if mt.n > 1 { // a redelivery: order counts first receipts only
			return "", ""
		}
		mt.first = at
		// tsmCloudTs is the ingest's receipt truncated to the
		// millisecond: take the middle of that millisecond.
		mt.cloudLag = at.Sub(time.UnixMilli(int64(math.Round(cloud * 1000))).Add(500 * time.Microsecond))
		d := &gw.devices[sensor]
		if seq > d.newest {
			d.newest = seq
			return "", ""
		}
		if p := gw.pubs[seq]; p.state == pubAcked && gw.pubs[d.newest].at.After(p.answer) {
			d.violations++
			return "", fmt.Sprintf("%s: message %d arrived after message %d, which was published after %d was acknowledged (out of order)", m.Tuid, seq, d.newest, seq)
		}
		return "", ""
	}
	return fmt.Sprintf("message of %s with tsmTs %d, lght %d was never published", m.Tuid, ts, lght), ""
}

// parseBenchTuid returns the gateway and sensor numbers of a TUID the
// payload generator made: TSEN01B, 2 digits of sensor, 8 of gateway.
func parseBenchTuid(tuid string) (g, sensor int, ok bool) {
	if len(tuid) != 17 || !strings.HasPrefix(tuid, "TSEN01B") {
		return 0, 0, false
	}
	s, err1 := strconv.Atoi(tuid[7:9])
	n, err2 := strconv.Atoi(tuid[9:])
	if err1 != nil || err2 != nil || s < 0 || n < 0 {
		return 0, 0, false
	}
	return n, s, true
}

// Progress returns how many distinct published messages have arrived and
// how many acknowledged ones have not (yet).
func (t *ForwardTrace) Progress() (arrived, undelivered int64) {
	for _, gw := range t.gws {
		gw.mu.Lock()
		for seq, p := range gw.pubs {
			for _, m := range gw.msgs[seq*t.perPublish : (seq+1)*t.perPublish] {
				switch {
				case m.n > 0:
					arrived++
				case p.state == pubAcked:
					undelivered++
				}
			}
		}
		gw.mu.Unlock()
	}
	return arrived, undelivered
}

// WaitDelivered waits until every acknowledged message has arrived, at
// most limit (or until ctx ends); it reports whether all did and how long
// it waited.
func (t *ForwardTrace) WaitDelivered(ctx context.Context, limit time.Duration) (bool, time.Duration) {
	start := time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, undelivered := t.Progress(); undelivered == 0 {
			return true, time.Since(start)
		}
		if time.Since(start) >= limit {
			return false, time.Since(start)
		}
		select {
		case <-ctx.Done():
			return false, time.Since(start)
		case <-tick.C:
		}
	}
}

// ForwardResult is what one forwarding run measured at the receiver.
type ForwardResult struct {
	// Phase is "steady" (open loop at a fixed rate) or "throughput"
	// (closed loop: as fast as the gateways can publish).
	Phase            string `json:"phase"`
	Type             string `json:"type"`
	BatchMaxMessages int    `json:"batch_max_messages"`
	BatchMaxWait     string `json:"batch_max_wait"`
	// Concurrency is the integration's delivery.concurrency as the server
	// answered it (its lanes).
	Concurrency int `json:"concurrency"`

	// Published counts the Thingsee messages handed to the MQTT client
	// during the whole run (warmup included), Acked those in acknowledged
	// publishes.
	Published int64 `json:"published"`
	Acked     int64 `json:"acked"`
	// Arrived counts the distinct published messages the receiver got;
	// Missing the acknowledged ones it had not got when the wait after the
	// load ended; ArrivedUnacked the received ones whose publish was not
	// acknowledged (possible: stored, then the PUBACK was lost).
	Arrived        int64 `json:"arrived"`
	Missing        int64 `json:"missing"`
	ArrivedUnacked int64 `json:"arrived_unacked,omitempty"`
	// Duplicates counts receipts of a message beyond its first (allowed by
	// at-least-once delivery, but each is a redelivery).
	Duplicates int64 `json:"duplicates"`
	// Unknown counts received messages that match no publish of the run.
	Unknown int64 `json:"unknown"`
	// OrderViolations counts messages first received after a message of
	// the same device (tsmTuid) that was published later;
	// DevicesOutOfOrder the devices with any. Both must be 0: the server
	// keeps each device's order.
	OrderViolations   int64 `json:"order_violations"`
	DevicesOutOfOrder int   `json:"devices_out_of_order"`
	// Refused counts the requests the receiver answered 503 during an
	// outage (WebhookReceiver.Unavailable): each batch in them must
	// arrive again later.
	Refused int64 `json:"receiver_refused,omitempty"`

	// Batches counts the webhook requests, RetriedBatches the webhook-ids
	// received more than once; MessagesReceived the Thingsee objects in all
	// requests (duplicates included).
	Batches          int64   `json:"batches"`
	RetriedBatches   int64   `json:"retried_batches"`
	MessagesReceived int64   `json:"messages_received"`
	MeanBatch        float64 `json:"mean_batch"`
	MaxBatch         int     `json:"max_batch"`
	// SignatureFailures counts requests whose Standard Webhooks signature
	// did not verify with the integration's secret; BadRequests those
	// whose body is not a JSON array of objects.
	SignatureFailures int64    `json:"signature_failures"`
	BadRequests       int64    `json:"bad_requests"`
	Samples           []string `json:"samples,omitempty"`

	// DeliveredInWindow counts the messages first received during the
	// measured window; DeliveredPerSecond is that per second.
	DeliveredInWindow  int64   `json:"delivered_in_window"`
	DeliveredPerSecond float64 `json:"delivered_per_s"`
	// E2E is publish (handed to the client) to first receipt of the
	// messages published during the measured window; CloudToReceiver is
	// tsmCloudTs (the ingest's receipt, millisecond resolution) to first
	// receipt of the same messages: the forwarding part of E2E.
	E2E             LatencySummary `json:"e2e_latency"`
	CloudToReceiver LatencySummary `json:"cloud_to_receiver_latency"`
	// PendingAtWindowEnd counts messages published before the window's end
	// and not yet received then: the whole pipeline's backlog.
	PendingAtWindowEnd int64 `json:"pending_at_window_end"`
	// WaitedSeconds is how long after the load the run waited for the
	// rest to arrive; Drained is whether everything acknowledged did.
	WaitedSeconds float64 `json:"waited_s"`
	Drained       bool    `json:"drained"`

	// The integration as the node's API showed it right after the load and
	// after the wait.
	AtLoadEnd *IntegrationStatus `json:"integration_at_load_end,omitempty"`
	AfterWait *IntegrationStatus `json:"integration_after_wait,omitempty"`
}

// Result summarises the trace; windowStart and windowEnd bound the
// measured window.
func (t *ForwardTrace) Result(windowStart, windowEnd time.Time) *ForwardResult {
	r := &ForwardResult{}
	w := window{start: windowStart, end: windowEnd}
	var e2e, cloud []time.Duration
	for _, gw := range t.gws {
		gw.mu.Lock()
		for seq, p := range gw.pubs {
			for _, m := range gw.msgs[seq*t.perPublish : (seq+1)*t.perPublish] {
				r.Published++
				if p.state == pubAcked {
					r.Acked++
				}
				if m.n == 0 {
					if p.state == pubAcked {
						r.Missing++
					}
					if p.at.Before(w.end) {
						r.PendingAtWindowEnd++
					}
					continue
				}
				r.Arrived++
				r.Duplicates += int64(m.n - 1)
				if p.state != pubAcked {
					r.ArrivedUnacked++
				}
				if w.measured(m.first) {
					r.DeliveredInWindow++
				}
				if p.at.Before(w.end) && !m.first.Before(w.end) {
					r.PendingAtWindowEnd++
				}
				if w.measured(p.at) {
					e2e = append(e2e, m.first.Sub(p.at))
					cloud = append(cloud, m.cloudLag)
				}
			}
		}
		for _, d := range gw.devices {
			if d.violations > 0 {
				r.OrderViolations += d.violations
				r.DevicesOutOfOrder++
			}
		}
		gw.mu.Unlock()
	}
	r.E2E, r.CloudToReceiver = Summarize(e2e), Summarize(cloud)
	if d := w.end.Sub(w.start).Seconds(); d > 0 {
		r.DeliveredPerSecond = float64(r.DeliveredInWindow) / d
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	r.Batches, r.MessagesReceived, r.MaxBatch = t.rc.requests, t.rc.messages, t.rc.maxBatch
	r.SignatureFailures, r.BadRequests, r.Unknown, r.Refused = t.rc.sigFailures, t.rc.badRequests, t.rc.unknown, t.rc.refusals
	r.Samples = append([]string(nil), t.rc.samples...)
	for _, n := range t.rc.batchIDs {
		if n > 1 {
			r.RetriedBatches++
		}
	}
	if r.Batches > 0 {
		r.MeanBatch = float64(r.MessagesReceived) / float64(r.Batches)
	}
	return r
}

// forwardWebhook is the webhook integration of a forward phase.
type forwardWebhook struct {
	WebhookIntegration
	// Concurrency is its delivery.concurrency as the server answered it.
	Concurrency int
}

// createForwardWebhook creates, through api, the webhook integration of a
// forward phase in tenant: to target (verified with caPEM), with o's
// batching and lanes (o.ForwardConcurrency, 0: the server's default).
func createForwardWebhook(ctx context.Context, api *client.Client, tenant string, o Options, name, target, caPEM string) (forwardWebhook, error) {
	out, err := api.CreateIntegration(ctx, tenant, client.Integration{
		Name: name, Type: client.IntegrationWebhook,
		Webhook:  &client.WebhookConfig{URL: target, CAPEM: caPEM},
		Batch:    client.Batching{MaxMessages: o.ForwardBatch, MaxWait: client.Duration(o.ForwardWait)},
		Delivery: client.Delivery{Concurrency: o.ForwardConcurrency},
	})
	if err != nil {
		return forwardWebhook{}, fmt.Errorf("bench: create the webhook integration: %w", err)
	}
	if out.ID == "" || out.Webhook == nil || out.Webhook.Secret == "" {
		return forwardWebhook{}, errors.New("bench: the created integration has no id or no signing secret in the answer")
	}
	return forwardWebhook{WebhookIntegration{ID: out.ID, Secret: out.Webhook.Secret}, out.Delivery.Concurrency}, nil
}
