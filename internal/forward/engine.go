package forward

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/forward/egress"
	"github.com/iotransit/iotransit/internal/retry"
	"github.com/iotransit/iotransit/internal/store"
)

// Factory builds the targets of one integration type.
type Factory interface {
	// Prepare checks the type's settings with the secrets (fault errors,
	// every problem at once) and fills defaults.
	Prepare(ctx context.Context, in *Integration, sec *Secrets, pol egress.Policy) error
	// New builds a target.
	New(ctx context.Context, in Integration, sec Secrets, pol egress.Policy, sealer Sealer) (Target, error)
}

// Messages reads and re-drives messages of tenants' streams (store.Store).
type Messages interface {
	Decode(ctx context.Context, tenant string, seq uint64, stored time.Time, h nats.Header, data []byte) (store.Message, error)
	Redrive(ctx context.Context, tenant, integration string, h nats.Header, data []byte) error
}

// StreamProvider creates streams and TTL buckets (backbone.Backbone).
type StreamProvider interface {
	Stream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error)
	KVWithTTL(ctx context.Context, bucket string, ttl time.Duration) (jetstream.KeyValue, error)
}

// Config tunes the engine.
type Config struct {
	// NodeID names this node in leases (default: random).
	NodeID string
	// Policy guards outbound connections (SSRF).
	Policy egress.Policy
	// AckWait is how long a fetched message may stay unacknowledged before
	// JetStream redelivers it (default 30s; held batches are kept alive).
	AckWait time.Duration
	// RetryBase and RetryMax bound the exponential backoff (1s, 5m).
	RetryBase, RetryMax time.Duration
	// DeliveryTimeout bounds one delivery attempt (default 60s).
	DeliveryTimeout time.Duration
	// LeaseTTL is how long a node holds an integration without renewing (15s).
	LeaseTTL time.Duration
	// ParseKey turns a public key PEM into a Sealer and its key id.
	ParseKey func(pemBytes []byte) (Sealer, string, error)
}

func (c *Config) defaults() {
	if c.NodeID == "" {
		b := make([]byte, 6)
		_, _ = rand.Read(b)
		c.NodeID = "node-" + base64.RawURLEncoding.EncodeToString(b)
	}
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
	if c.RetryBase == 0 {
		c.RetryBase = time.Second
	}
	if c.RetryMax == 0 {
		c.RetryMax = 5 * time.Minute
	}
	if c.DeliveryTimeout == 0 {
		c.DeliveryTimeout = time.Minute
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 15 * time.Second
	}
}

// Engine runs the delivery of every integration of every tenant this node
// knows, one worker per integration holding a lease so that only one node
// delivers it.
type Engine struct {
	cfg       Config
	js        jetstream.JetStream
	kvs       KVProvider
	streams   StreamProvider
	keys      Keys
	msgs      Messages
	factories map[string]Factory
	log       *slog.Logger
	m         *metrics

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	tenants map[string]bool
	workers map[string]*worker // tenant/id
	leases  jetstream.KeyValue
}

// restarts paces the restarts of a watch or a delivery session that ended.
var restarts = retry.Backoff{Base: time.Second, Max: time.Minute}

// New returns an engine; call AddTenant for each tenant, then it runs until Close.
func New(cfg Config, js jetstream.JetStream, kvs KVProvider, streams StreamProvider, keys Keys, msgs Messages, factories map[string]Factory, reg prometheus.Registerer, log *slog.Logger) *Engine {
	cfg.defaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Engine{
		cfg: cfg, js: js, kvs: kvs, streams: streams, keys: keys, msgs: msgs, factories: factories,
		log: log.With("component", "forward"), m: newMetrics(reg), ctx: ctx, cancel: cancel,
		tenants: map[string]bool{}, workers: map[string]*worker{},
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
	if e.tenants[tenant] {
		e.mu.Unlock()
		return
	}
	e.tenants[tenant] = true
	e.mu.Unlock()
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		retry.Forever(e.ctx, restarts, func(context.Context) error { return e.watch(tenant) }, func(err error, _ time.Duration) {
			e.log.Warn("integration watch ended; restarting", "tenant_id", tenant, "error", err)
		})
	}()
}

// watch follows a tenant's integration bucket and reconciles workers.
func (e *Engine) watch(tenant string) error {
	kv, err := e.bucket(e.ctx, tenant)
	if err != nil {
		return err
	}
	w, err := kv.WatchAll(e.ctx)
	if err != nil {
		return err
	}
	defer w.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return nil
		case ent, ok := <-w.Updates():
			if !ok {
				return errors.New("watch closed")
			}
			if ent == nil {
				continue // end of initial values
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
	w := &worker{e: e, tenant: r.Tenant, id: r.ID, rev: rev, cancel: cancel, done: make(chan struct{})}
	e.mu.Lock()
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

// filterSubjects returns the consumer's subject filters (the messages the
// filter selects and those re-driven to the integration) and whether the
// filter must also be applied in process (too many combinations).
func filterSubjects(tenant, id string, f Filter) ([]string, bool) {
	subjects, inProcess := StreamSubjects(tenant, f)
	return append(subjects, names.RedrivenTo(tenant, id)), inProcess
}

// StreamSubjects returns the subjects of a tenant's messages a filter
// selects, and whether it must also be applied in process (Matches).
func StreamSubjects(tenant string, f Filter) ([]string, bool) {
	any := func(v []string) []string {
		if len(v) == 0 {
			return []string{"*"}
		}
		return v
	}
	ids := []string{"*"}
	if len(f.TsmIDs) > 0 {
		ids = nil
		for _, t := range f.TsmIDs {
			ids = append(ids, strconv.Itoa(t))
		}
	}
	gws, devs := any(f.Gateways), any(f.Devices)
	if len(gws)*len(devs)*len(ids) > 256 {
		return []string{names.Messages(tenant)}, true
	}
	var out []string
	for _, g := range gws {
		for _, d := range devs {
			for _, t := range ids {
				out = append(out, names.MessageFilter(tenant, g, d, t))
			}
		}
	}
	if len(out) == 1 && out[0] == names.MessageFilter(tenant, "*", "*", "*") {
		out[0] = names.Messages(tenant)
	}
	return out, false
}

// Matches applies the filter in process.
func (f Filter) Matches(m store.Message) bool {
	return (len(f.Gateways) == 0 || slices.Contains(f.Gateways, m.Gateway)) &&
		(len(f.Devices) == 0 || slices.Contains(f.Devices, m.Tuid)) &&
		(len(f.TsmIDs) == 0 || slices.Contains(f.TsmIDs, m.TsmID))
}

// ensureStreams makes the integration's durable consumer and dead-letter
// stream. A new integration receives messages stored from its creation on.
func (e *Engine) ensureStreams(ctx context.Context, r Integration, state State) (jetstream.Consumer, bool, error) {
	if _, err := e.streams.Stream(ctx, jetstream.StreamConfig{
		Name:        names.DeadLetterStream(r.Tenant, r.ID),
		Description: "dead letters of integration " + r.ID + " of tenant " + r.Tenant,
		Subjects:    []string{names.DeadLetter(r.Tenant, r.ID)},
		Duplicates:  time.Hour,
	}); err != nil {
		return nil, false, err
	}
	subjects, inProcess := filterSubjects(r.Tenant, r.ID, r.Filter)
	cfg := jetstream.ConsumerConfig{
		Durable:        names.IntegrationConsumer(r.ID),
		Description:    "delivery of integration " + r.ID,
		FilterSubjects: subjects,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        e.cfg.AckWait,
		MaxDeliver:     -1, // retries are the engine's: it dead-letters by age
		MaxAckPending:  r.Batch.MaxMessages,
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &r.CreatedAt,
	}
	if len(subjects) == 1 {
		cfg.FilterSubject, cfg.FilterSubjects = subjects[0], nil
	}
	st, err := e.js.Stream(ctx, names.MessageStream(r.Tenant))
	if err != nil {
		return nil, false, fmt.Errorf("forward: message stream: %w", err)
	}
	cons, err := st.Consumer(ctx, names.IntegrationConsumer(r.ID))
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		cons, err = st.CreateConsumer(ctx, cfg)
	} else if err == nil {
		// The start position is fixed at creation (by time, or by sequence
		// after a reset below); filters and limits follow updates.
		info := cons.CachedInfo()
		cfg.DeliverPolicy, cfg.OptStartTime, cfg.OptStartSeq = info.Config.DeliverPolicy, info.Config.OptStartTime, info.Config.OptStartSeq
		cons, err = st.UpdateConsumer(ctx, cfg)
	}
	if err != nil {
		return nil, false, fmt.Errorf("forward: consumer: %w", err)
	}
	// Messages a previous session fetched and did not acknowledge (it died
	// or lost its lease mid-batch) would be redelivered only after AckWait,
	// and after newer ones: order would break. Batches are acknowledged in
	// order, so one sequence is the whole position: start again there, at
	// once and in order. The engine's own record (written through to the
	// stream before it acknowledges) wins over the consumer's ack floor,
	// which JetStream writes to disk lazily and a crash can roll back: that
	// would resend delivered batches, and the interrupted batch under a new
	// id.
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("forward: consumer info: %w", err)
	}
	start := info.AckFloor.Stream + 1
	if state.AckedThrough+1 > start {
		start = state.AckedThrough + 1
	}
	if p := state.Pending; p != nil && p.FirstSeq > state.AckedThrough {
		start = p.FirstSeq
	}
	if info.NumAckPending > 0 || start != info.AckFloor.Stream+1 {
		if err := st.DeleteConsumer(ctx, names.IntegrationConsumer(r.ID)); err != nil {
			return nil, false, fmt.Errorf("forward: reset consumer: %w", err)
		}
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartSequencePolicy, nil
		cfg.OptStartSeq = start
		if cons, err = st.CreateConsumer(ctx, cfg); err != nil {
			return nil, false, fmt.Errorf("forward: reset consumer: %w", err)
		}
	}
	return cons, inProcess, nil
}

// State is an integration's delivery state, kept in KV so every node shows it.
type State struct {
	Delivered           uint64     `json:"delivered"`
	Batches             uint64     `json:"batches"`
	Failed              uint64     `json:"failedAttempts"`
	DeadLettered        uint64     `json:"deadLettered"`
	ConsecutiveFailures int        `json:"consecutiveFailures"`
	LastError           string     `json:"lastError,omitempty"`
	LastErrorAt         *time.Time `json:"lastErrorAt,omitempty"`
	LastSuccessAt       *time.Time `json:"lastSuccessAt,omitempty"`
	LastAttemptAt       *time.Time `json:"lastAttemptAt,omitempty"`
	NextRetryAt         *time.Time `json:"nextRetryAt,omitempty"`
	Node                string     `json:"node,omitempty"`
	// AckedThrough is the stream sequence up to which this integration's
	// messages are delivered or dead-lettered.
	AckedThrough uint64   `json:"ackedThrough,omitempty"`
	Pending      *Pending `json:"pending,omitempty"`
}

// Pending is the batch being delivered: its id survives restarts.
type Pending struct {
	ID        string    `json:"id"`
	FirstSeq  uint64    `json:"firstSeq"`
	LastSeq   uint64    `json:"lastSeq"`
	Attempts  int       `json:"attempts"`
	StartedAt time.Time `json:"startedAt"`
}

func (e *Engine) loadState(ctx context.Context, tenant, id string) (State, error) {
	kv, err := e.kvs.KV(ctx, names.IntegrationStateBucket(tenant), 1)
	if err != nil {
		return State{}, err
	}
	ent, err := kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return State{}, nil
	}
	if err != nil {
		return State{}, err
	}
	var s State
	return s, json.Unmarshal(ent.Value(), &s)
}

func (e *Engine) saveState(ctx context.Context, tenant, id string, s State) error {
	kv, err := e.kvs.KV(ctx, names.IntegrationStateBucket(tenant), 1)
	if err != nil {
		return err
	}
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, id, b)
	return err
}

// lease holds an integration for this node: a key in a TTL bucket, renewed
// while the worker runs. The returned context ends when the lease is lost.
func (e *Engine) lease(ctx context.Context, tenant, id string) (context.Context, func(), error) {
	e.mu.Lock()
	kv := e.leases
	e.mu.Unlock()
	if kv == nil {
		var err error
		if kv, err = e.streams.KVWithTTL(ctx, names.LeasesBucket, e.cfg.LeaseTTL); err != nil {
			return nil, nil, err
		}
		e.mu.Lock()
		e.leases = kv
		e.mu.Unlock()
	}
	key := tenant + "." + id
	var rev uint64
	for {
		r, err := kv.Create(ctx, key, []byte(e.cfg.NodeID))
		if err == nil {
			rev = r
			break
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, nil, err
		}
		// Our own lease from before a restart (same node id): take it back.
		if ent, gerr := kv.Get(ctx, key); gerr == nil && string(ent.Value()) == e.cfg.NodeID {
			if r, uerr := kv.Update(ctx, key, []byte(e.cfg.NodeID), ent.Revision()); uerr == nil {
				rev = r
				break
			}
		}
		select { // another node holds it; it expires if that node dies
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(e.cfg.LeaseTTL / 3):
		}
	}
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(e.cfg.LeaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-lctx.Done():
				return
			case <-t.C:
				r, err := kv.Update(lctx, key, []byte(e.cfg.NodeID), rev)
				if err != nil {
					if lctx.Err() == nil {
						e.log.Warn("integration lease lost", "tenant_id", tenant, "integration_id", id, "error", err)
					}
					cancel()
					return
				}
				rev = r
			}
		}
	}()
	release := func() {
		cancel()
		<-done
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		_ = kv.Delete(dctx, key, jetstream.LastRevision(rev))
	}
	return lctx, release, nil
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
