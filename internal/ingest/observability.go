package ingest

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the ingest's counters. Labels are stable reason codes.
type metrics struct {
	connRefused  *prometheus.CounterVec
	connAccepted prometheus.Counter
	// acceptErrors counts failed Accepts of the listener (retried).
	acceptErrors prometheus.Counter
	// eventsSummarized counts events over their budget, which reach the
	// audit log (connection events) and the server log only in a summary.
	eventsSummarized *prometheus.CounterVec
	publishRefused   *prometheus.CounterVec
	// quotaRefused counts the uploads refused by a tenant's quota, by
	// tenant and quota.
	quotaRefused    *prometheus.CounterVec
	messages        *prometheus.CounterVec
	persistDuration prometheus.Histogram
	// statuses counts the valid gateway statuses taken.
	statuses prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "iotransit_ingest_connections_refused_total",
			Help: "Gateway connections refused, by reason.",
		}, []string{"reason"}),
		connAccepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "iotransit_ingest_connections_accepted_total",
			Help: "Gateway connections accepted.",
		}),
		acceptErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "iotransit_ingest_accept_errors_total",
			Help: "Failed accepts of the gateway listener (out of file descriptors, for one), each retried after a backoff.",
		}),
		eventsSummarized: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "iotransit_ingest_connection_events_summarized_total",
			Help: "Gateway events over their budget, recorded only in a summary, by kind (connect, disconnect, refused; topic_refused and will_dropped, which reach only the server log).",
		}, []string{"kind"}),
		publishRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "iotransit_ingest_publishes_refused_total",
			Help: "MQTT publishes and subscriptions refused, by reason.",
		}, []string{"reason"}),
		quotaRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "iotransit_ingest_quota_refusals_total",
			Help: "Gateway uploads refused by a tenant's quota, by tenant and quota (stored_bytes: a stream of the tenant holds its stored-bytes quota; PUBACK 0x97).",
		}, []string{"tenant", "quota"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "iotransit_ingest_messages_total",
			Help: "Thingsee messages by outcome (stored, duplicate, rejected).",
		}, []string{"outcome"}),
		persistDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "iotransit_ingest_persist_seconds",
			Help:    "Time from a publish's arrival to JetStream's acknowledgement of all its messages.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		statuses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "iotransit_ingest_gateway_statuses_total",
			Help: "Gateway statuses taken (invalid ones count in iotransit_ingest_publishes_refused_total{reason=\"status_invalid\"}).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.connRefused, m.connAccepted, m.acceptErrors, m.eventsSummarized, m.publishRefused, m.quotaRefused, m.messages, m.persistDuration, m.statuses)
	}
	return m
}

// quietHandler drops attributes that may carry payloads or secrets from
// mochi's log records (mochi logs whole packets on some errors) and keeps
// only warnings and above.
type quietHandler struct{ h slog.Handler }

var droppedAttrs = map[string]bool{"pk": true, "packet": true, "payload": true, "password": true, "username": true}

func (q quietHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && q.h.Enabled(ctx, l)
}

// droppedMessages are mochi records about refusals the ingest logs and
// counts itself.
var droppedMessages = map[string]bool{"publish packet error": true, "publish packet rejected": true, "error processing packet": true}

func (q quietHandler) Handle(ctx context.Context, r slog.Record) error {
	if droppedMessages[r.Message] {
		return nil
	}
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if !droppedAttrs[a.Key] {
			out.AddAttrs(a)
		}
		return true
	})
	return q.h.Handle(ctx, out)
}

func (q quietHandler) WithAttrs(as []slog.Attr) slog.Handler {
	kept := as[:0:0]
	for _, a := range as {
		if !droppedAttrs[a.Key] {
			kept = append(kept, a)
		}
	}
	return quietHandler{q.h.WithAttrs(kept)}
}

func (q quietHandler) WithGroup(name string) slog.Handler { return quietHandler{q.h.WithGroup(name)} }
