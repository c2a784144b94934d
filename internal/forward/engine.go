// The delivery engine: it follows every tenant's integrations bucket and
// runs one worker (worker.go) per active integration, under a lease
// (lease.go) so that one node delivers it.

package forward

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/retry"
)

// Engine runs the delivery of every integration of every tenant this node
// knows, one worker per integration holding a lease so that only one node
// delivers it.
type Engine struct {
	records
	cfg       Config
	js        jetstream.JetStream
	streams   StreamProvider
	msgs      Messages
	factories map[string]Factory
	log       *slog.Logger
	m         *metrics

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// dlqRetention, when set, gives a tenant's own dead-letter retention
	// (retention.go).
	dlqRetention atomic.Pointer[func(tenant string) time.Duration]

	mu sync.Mutex
	// tenants holds the stop of each followed tenant's watch; a dropped
	// tenant (DropTenant) stays with a nil stop, so it is not added again.
	tenants map[string]context.CancelFunc
	workers map[string]*worker // tenant/id
	leases  jetstream.KeyValue
}

// restarts paces the restarts of a watch or a delivery session that ended.
var restarts = retry.Backoff{Base: time.Second, Max: time.Minute}

// New returns an engine; call AddTenant for each tenant, then it runs until
// Close. It never writes integrations: it follows what the registry (of any
// node) writes.
func New(cfg Config, deps Deps) *Engine {
	cfg.defaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Engine{
		records: newRecords(deps), cfg: cfg, js: deps.JetStream, streams: deps.Streams, msgs: deps.Messages, factories: deps.Factories,
		log: deps.Logger.With("component", "forward"), m: newMetrics(deps.Metrics), ctx: ctx, cancel: cancel,
		tenants: map[string]context.CancelFunc{}, workers: map[string]*worker{},
	}
}

// Close stops every worker (their leases are released) and waits.
func (e *Engine) Close() {
	e.cancel()
	e.wg.Wait()
}

// AddTenant starts following a tenant's integrations. Idempotent.
func (e *Engine) AddTenant(tenant string) {
	e.mu.Lock()
	if _, ok := e.tenants[tenant]; ok {
		e.mu.Unlock()
		return
	}
	ctx, stop := context.WithCancel(e.ctx)
	e.tenants[tenant] = stop
	e.mu.Unlock()
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		retry.Forever(ctx, restarts, func(context.Context) error { return e.watch(ctx, tenant) }, func(err error, _ time.Duration) {
			e.log.Warn("integration watch ended; restarting", "tenant_id", tenant, "error", err)
		})
	}()
}

// watch follows a tenant's integration bucket and reconciles workers until
// ctx ends.
func (e *Engine) watch(ctx context.Context, tenant string) error {
	kv, err := e.bucket(ctx, tenant)
	if err != nil {
		return err
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer w.Stop()
	// Retry-now keys replayed as initial values are past requests.
	initial := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case ent, ok := <-w.Updates():
			if !ok {
				return errors.New("watch closed")
			}
			if ent == nil {
				initial = false // end of initial values
				continue
			}
			if id := retryID(ent.Key()); id != "" {
				if !initial && ent.Operation() == jetstream.KeyValuePut {
					e.retryNow(tenant, id)
				}
				continue
			}
			if !validID(ent.Key()) {
				continue // a name claim (nameKey), not an integration
			}
			if ent.Operation() != jetstream.KeyValuePut {
				e.stopWorker(tenant, ent.Key())
				continue
			}
			var r record
			if err := json.Unmarshal(ent.Value(), &r); err != nil {
				e.log.Error("decode integration", "tenant_id", tenant, "integration_id", ent.Key(), "error", err)
				continue
			}
			e.reconcile(r, ent.Revision())
		}
	}
}

func workerKey(tenant, id string) string { return tenant + "/" + id }

// reconcile starts, restarts or stops the worker of an integration.
func (e *Engine) reconcile(r record, rev uint64) {
	key := workerKey(r.Tenant, r.ID)
	e.mu.Lock()
	cur := e.workers[key]
	e.mu.Unlock()
	if cur != nil && cur.rev == rev {
		return
	}
	if cur != nil {
		e.stopWorker(r.Tenant, r.ID)
	}
	if r.Paused || r.Type == TypeWebsocket || e.factories[r.Type] == nil {
		return
	}
	ctx, cancel := context.WithCancel(e.ctx)
	w := &worker{e: e, tenant: r.Tenant, id: r.ID, rev: rev, cancel: cancel, done: make(chan struct{}), poke: make(chan struct{}, 1)}
	e.mu.Lock()
	if stop, ok := e.tenants[r.Tenant]; ok && stop == nil { // dropped meanwhile
		e.mu.Unlock()
		cancel()
		return
	}
	e.workers[key] = w
	e.mu.Unlock()
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer close(w.done)
		w.run(ctx)
	}()
}

func (e *Engine) stopWorker(tenant, id string) {
	key := workerKey(tenant, id)
	e.mu.Lock()
	w := e.workers[key]
	delete(e.workers, key)
	e.mu.Unlock()
	if w != nil {
		w.cancel()
		<-w.done
	}
}

// State is an integration's delivery state, kept in KV so every node shows
// it: what the API shows (client.IntegrationState, in the same JSON object)
// and the batch being delivered.
type State struct {
	client.IntegrationState
	// Pending is the batch being delivered by an integration delivering
	// one batch at a time (one lane).
	Pending *Pending `json:"pending,omitempty"`
	// Lanes holds the state of each lane of an integration delivering
	// several batches at once, one entry per lane.
	Lanes []LaneState `json:"lanes,omitempty"`
	// FormerLanes is, after delivery.concurrency changed, each former
	// lane's AckedThrough (as many as there were lanes): a message of a
	// device whose former lane already delivered past it is not delivered
	// again. It goes once AckedThrough passes them all.
	FormerLanes formerLanes `json:"formerLanes,omitempty"`
}

// formerLanes is each former lane's AckedThrough (State.FormerLanes).
type formerLanes []uint64

// retireLanes keeps the lanes' records as FormerLanes when the number of
// lanes changes to n (1: one batch at a time) and drops the former ones
// that AckedThrough passed. It reports whether Lanes must be made anew.
func (s *State) retireLanes(n int) bool {
	if len(s.FormerLanes) > 0 && s.AckedThrough >= slices.Max(s.FormerLanes) {
		s.FormerLanes = nil
	}
	if len(s.Lanes) == n || (n == 1 && len(s.Lanes) == 0) {
		return false
	}
	if len(s.Lanes) > 1 {
		former := make([]uint64, len(s.Lanes))
		for i, ls := range s.Lanes {
			former[i] = ls.AckedThrough
		}
		if s.AckedThrough < slices.Max(former) {
			s.FormerLanes = former
		}
	}
	return true
}

// delivered reports whether the former lane of device tuid delivered the
// message at seq.
func (f formerLanes) delivered(tuid string, seq uint64) bool {
	return len(f) > 0 && seq <= f[laneOf(tuid, len(f))]
}

// LaneState is one lane's part of the delivery state.
type LaneState struct {
	// Pending is the lane's batch being delivered.
	Pending *Pending `json:"pending,omitempty"`
	// AckedThrough is the highest stream sequence the lane delivered or
	// dead-lettered: every message of its devices up to it is done, so a
	// restart with the same lanes skips them.
	AckedThrough uint64 `json:"ackedThrough,omitempty"`
}

// Pending is the batch being delivered: its id survives restarts.
type Pending struct {
	ID        string    `json:"id"`
	FirstSeq  uint64    `json:"firstSeq"`
	LastSeq   uint64    `json:"lastSeq"`
	Attempts  int       `json:"attempts"`
	StartedAt time.Time `json:"startedAt"`
}

// metrics of forwarding.
type metrics struct {
	messages *prometheus.CounterVec
	attempts *prometheus.CounterVec
	latency  prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "iotransit_forward_messages_total", Help: "Messages forwarded, by integration type and outcome (delivered, dead_lettered)."}, []string{"type", "outcome"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "iotransit_forward_attempts_total", Help: "Delivery attempts by integration type and outcome (ok, failed)."}, []string{"type", "outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "iotransit_forward_latency_seconds", Help: "From a message's receipt by the ingest to its delivery.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 18),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.messages, m.attempts, m.latency)
	}
	return m
}
